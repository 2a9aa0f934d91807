//! Spark SQL functions that DataFusion lacks, registered as UDFs: `from_json`, `to_json`,
//! `get_json_object`, `window`, `session_window`, `timestamp_millis`,
//! `timestamp_seconds`, `unix_millis`, `date_format`, and the `approx_count_distinct`
//! alias. `window`/`session_window` evaluated outside a streaming aggregation give the
//! window that contains the row; inside one the aggregation operator expands them itself
//! (see `aggregate.rs`).

use crate::ddl;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, StringArray, StringBuilder, StructArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// Registers every Runnel function on a session.
pub fn register_all(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(FromJson::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(ToJson::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(GetJsonObject::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(WindowFn::new("window")));
    ctx.register_udf(ScalarUDF::new_from_impl(WindowFn::new("session_window")));
    ctx.register_udf(ScalarUDF::new_from_impl(ToTimestamp::new(
        "timestamp_millis",
        1,
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(ToTimestamp::new(
        "timestamp_seconds",
        1000,
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(UnixMillis::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(DateFormat::new()));
    let state = ctx.state();
    // Spark's split(str, pattern): DataFusion's string_to_array splits on the pattern
    // as a literal text, which is Spark's answer for a pattern without regex
    // metacharacters (a space, a comma).
    if let Some(split) = state.scalar_functions().get("string_to_array") {
        ctx.register_udf(split.as_ref().clone().with_aliases(["split"]));
    }
    if let Some(approx) = state.aggregate_functions().get("approx_distinct") {
        let aliased = approx
            .as_ref()
            .clone()
            .with_aliases(["approx_count_distinct"]);
        ctx.register_udaf(aliased);
    }
}

fn literal_string(args: &ReturnFieldArgs, i: usize, fname: &str) -> Result<String> {
    match args.scalar_arguments.get(i).copied().flatten() {
        Some(ScalarValue::Utf8(Some(s)))
        | Some(ScalarValue::LargeUtf8(Some(s)))
        | Some(ScalarValue::Utf8View(Some(s))) => Ok(s.clone()),
        _ => plan_err!("{fname}: argument {} must be a string literal", i + 1),
    }
}

fn scalar_string(v: &ColumnarValue, fname: &str) -> Result<String> {
    match v {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => Ok(s.clone()),
        _ => exec_err!("{fname}: expected a string literal argument"),
    }
}

fn to_utf8(v: &ColumnarValue, rows: usize) -> Result<StringArray> {
    let a = v.clone().into_array(rows)?;
    let a = cast(&a, &DataType::Utf8)?;
    Ok(a.as_string::<i32>().clone())
}

/// `from_json(json_string, 'spark ddl schema')`: a struct, null where the input is null
/// or not a JSON object (Spark's PERMISSIVE mode).
#[derive(Debug, PartialEq, Eq, Hash)]
struct FromJson {
    signature: Signature,
}
impl FromJson {
    fn new() -> Self {
        FromJson {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for FromJson {
    fn name(&self) -> &str {
        "from_json"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        plan_err!("from_json: the return type comes from the schema literal")
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let ddl_text = literal_string(&args, 1, "from_json")?;
        let schema = ddl::parse_schema(&ddl_text)
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        Ok(Arc::new(Field::new(
            "from_json",
            DataType::Struct(schema.fields().clone()),
            true,
        )))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Struct(fields) = args.return_type().clone() else {
            return exec_err!("from_json: bad return type");
        };
        let input = to_utf8(&args.args[0], args.number_rows)?;
        Ok(ColumnarValue::Array(Arc::new(parse_json_column(
            &input, &fields,
        )?)))
    }
}

/// Rows `parse_json_column` looks at to decide whether cutting objects pays.
const PROJECTION_SAMPLE_ROWS: usize = 64;

/// Decodes a column of JSON objects into a struct array. The fast path decodes the whole
/// column at once, each object cut to the members `fields` names first
/// (`json_projection`); if any row is malformed, rows are decoded one by one, whole, and
/// bad rows become null.
pub fn parse_json_column(input: &StringArray, fields: &Fields) -> Result<StructArray> {
    let schema = Arc::new(Schema::new(fields.clone()));
    let n = input.len();
    let mut buf = Vec::with_capacity(input.value_data().len() + 3 * n);
    let mut valid = Vec::with_capacity(n);
    // Cutting pays where the schema names a part of each object; once the first rows
    // show it keeps most of the text, the rest go whole.
    let (mut read, mut kept, mut cut) = (0usize, 0usize, true);
    for i in 0..n {
        let ok = input.is_valid(i) && input.value(i).trim_start().starts_with('{');
        let text = if ok { input.value(i).as_bytes() } else { b"{}" };
        let start = buf.len();
        if !(cut && ok && crate::json_projection::project(text, fields, &mut buf)) {
            buf.extend_from_slice(text);
        }
        if cut && i < PROJECTION_SAMPLE_ROWS {
            (read, kept) = (read + text.len(), kept + buf.len() - start);
            cut = i + 1 < PROJECTION_SAMPLE_ROWS || kept * 4 < read * 3;
        }
        buf.push(b'\n');
        valid.push(ok);
    }
    let decode = |text: &[u8], rows: usize| -> Result<RecordBatch> {
        let mut decoder = datafusion::arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(rows.max(1))
            .with_strict_mode(false)
            .build_decoder()?;
        decoder.decode(text)?;
        let batch = decoder
            .flush()?
            .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
        if batch.num_rows() != rows {
            return exec_err!("from_json: {} values for {rows} rows", batch.num_rows());
        }
        Ok(batch)
    };
    let batch = match decode(&buf, n) {
        Ok(b) => b,
        Err(_) => {
            // Slow path: one row at a time, bad rows become `{}` and null.
            let mut parts = Vec::with_capacity(n);
            for i in 0..n {
                let text = if valid[i] { input.value(i) } else { "{}" };
                match decode(text.as_bytes(), 1) {
                    Ok(b) => parts.push(b),
                    Err(_) => {
                        valid[i] = false;
                        parts.push(decode(b"{}", 1)?);
                    }
                }
            }
            datafusion::arrow::compute::concat_batches(&schema, &parts)?
        }
    };
    let nulls = datafusion::arrow::buffer::NullBuffer::from(valid);
    Ok(StructArray::try_new(
        fields.clone(),
        batch.columns().to_vec(),
        Some(nulls),
    )?)
}

/// `to_json(struct)`: the struct as a JSON object string.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToJson {
    signature: Signature,
}
impl ToJson {
    fn new() -> Self {
        ToJson {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}
impl ScalarUDFImpl for ToJson {
    fn name(&self) -> &str {
        "to_json"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = args.args[0].clone().into_array(args.number_rows)?;
        let Some(s) = a.as_struct_opt() else {
            return exec_err!("to_json: argument must be a struct");
        };
        let fields: Vec<Field> = s
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), s.columns().to_vec())?;
        let mut out = Vec::new();
        {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
            w.write(&batch)?;
            w.finish()?;
        }
        let text = String::from_utf8(out)
            .map_err(|e| datafusion::error::DataFusionError::Execution(format!("to_json: {e}")))?;
        let mut b = StringBuilder::with_capacity(s.len(), text.len());
        for (i, line) in text.lines().enumerate() {
            if s.is_null(i) {
                b.append_null();
            } else {
                b.append_value(line);
            }
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

/// `get_json_object(json, '$.a.b[0]')`: the value at a JSON path, as a string.
#[derive(Debug, PartialEq, Eq, Hash)]
struct GetJsonObject {
    signature: Signature,
}
impl GetJsonObject {
    fn new() -> Self {
        GetJsonObject {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}
impl ScalarUDFImpl for GetJsonObject {
    fn name(&self) -> &str {
        "get_json_object"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let path = parse_json_path(&scalar_string(&args.args[1], "get_json_object")?)?;
        let input = to_utf8(&args.args[0], args.number_rows)?;
        let mut b = StringBuilder::new();
        for v in input.iter() {
            let found = v
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                .and_then(|mut j| {
                    for step in &path {
                        j = match step {
                            PathStep::Key(k) => j.get_mut(k.as_str())?.take(),
                            PathStep::Index(i) => j.get_mut(*i)?.take(),
                        };
                    }
                    Some(j)
                });
            match found {
                None | Some(serde_json::Value::Null) => b.append_null(),
                Some(serde_json::Value::String(s)) => b.append_value(s),
                Some(other) => b.append_value(other.to_string()),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

enum PathStep {
    Key(String),
    Index(usize),
}

fn parse_json_path(p: &str) -> Result<Vec<PathStep>> {
    let Some(rest) = p.strip_prefix('$') else {
        return exec_err!("get_json_object: path {p:?} must start with $");
    };
    let mut steps = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut k = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    k.push(n);
                    chars.next();
                }
                steps.push(PathStep::Key(k));
            }
            '[' => {
                let mut inner = String::new();
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    inner.push(n);
                }
                let inner = inner.trim();
                if let Ok(i) = inner.parse::<usize>() {
                    steps.push(PathStep::Index(i));
                } else {
                    steps.push(PathStep::Key(inner.trim_matches(['\'', '"']).to_string()));
                }
            }
            _ => return exec_err!("get_json_object: bad path {p:?}"),
        }
    }
    Ok(steps)
}

/// The struct type `window`/`session_window` return for a time column of type `t`.
pub fn window_type(t: &DataType) -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("start", t.clone(), true),
        Field::new("end", t.clone(), true),
    ]))
}

/// Converts a timestamp or integer (ms) column to milliseconds since the epoch.
pub fn to_millis(a: &ArrayRef) -> Result<TimestampMillisecondArray> {
    let a = match a.data_type() {
        DataType::Timestamp(_, Some(_)) => {
            cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))?
        }
        DataType::Int64 | DataType::Int32 => {
            let i = cast(a, &DataType::Int64)?;
            Arc::new(
                i.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .reinterpret_cast::<datafusion::arrow::datatypes::TimestampMillisecondType>(),
            ) as ArrayRef
        }
        _ => cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
    };
    Ok(
        a.as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>()
            .clone(),
    )
}

/// `window(ts, size [, slide [, startTime]])` and `session_window(ts, gap)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowFn {
    name: &'static str,
    signature: Signature,
}
impl WindowFn {
    fn new(name: &'static str) -> Self {
        WindowFn {
            name,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}
impl ScalarUDFImpl for WindowFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let max = if self.name == "window" { 4 } else { 2 };
        if args.len() < 2 || args.len() > max {
            return plan_err!("{}: expected 2 to {max} arguments", self.name);
        }
        let t = match &args[0] {
            DataType::Timestamp(u, _) => DataType::Timestamp(*u, None),
            other => {
                return plan_err!(
                    "{}: the time column must be a timestamp, not {other}",
                    self.name
                )
            }
        };
        Ok(window_type(&t))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let spec = WindowSpec::from_values(self.name, &args.args[1..])?;
        let ts = to_millis(&args.args[0].clone().into_array(args.number_rows)?)?;
        let starts: TimestampMillisecondArray = ts
            .iter()
            .map(|t| t.map(|t| spec.last_window_start(t)))
            .collect();
        let ends: TimestampMillisecondArray = ts
            .iter()
            .map(|t| t.map(|t| spec.last_window_start(t) + spec.size_ms))
            .collect();
        let DataType::Struct(fields) = args.return_type().clone() else {
            return exec_err!("window: bad return type");
        };
        let start = cast(&(Arc::new(starts) as ArrayRef), fields[0].data_type())?;
        let end = cast(&(Arc::new(ends) as ArrayRef), fields[1].data_type())?;
        Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(
            fields,
            vec![start, end],
            ts.nulls().cloned(),
        )?)))
    }
}

/// A time window as Spark defines it: tumbling when `slide == size`, sliding otherwise,
/// aligned to the epoch plus `offset_ms`; or a session window with a gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub size_ms: i64,
    pub slide_ms: i64,
    pub offset_ms: i64,
    pub session: bool,
}

impl WindowSpec {
    pub fn from_strings(fname: &str, args: &[String]) -> crate::error::Result<WindowSpec> {
        let ms: Vec<i64> = args
            .iter()
            .map(|a| ddl::parse_interval_ms(a))
            .collect::<crate::error::Result<_>>()?;
        let size_ms = ms[0];
        let slide_ms = ms.get(1).copied().unwrap_or(size_ms);
        let offset_ms = ms.get(2).copied().unwrap_or(0);
        if size_ms <= 0 || slide_ms <= 0 || slide_ms > size_ms {
            return Err(crate::error::SqlError::Query(format!(
                "{fname}: durations must be positive and the slide at most the window size"
            )));
        }
        if size_ms / slide_ms > 1000 {
            return Err(crate::error::SqlError::Query(format!(
                "{fname}: a row would fall in more than 1000 windows"
            )));
        }
        Ok(WindowSpec {
            size_ms,
            slide_ms,
            offset_ms: offset_ms.rem_euclid(slide_ms),
            session: fname == "session_window",
        })
    }

    fn from_values(fname: &str, vals: &[ColumnarValue]) -> Result<WindowSpec> {
        let strs = vals
            .iter()
            .map(|v| scalar_string(v, fname))
            .collect::<Result<Vec<_>>>()?;
        WindowSpec::from_strings(fname, &strs)
            .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))
    }

    /// Start of the latest window that contains `t`.
    pub fn last_window_start(&self, t: i64) -> i64 {
        if self.session {
            return t;
        }
        t - (t - self.offset_ms).rem_euclid(self.slide_ms)
    }

    /// Starts of every window that contains `t`, latest first.
    pub fn window_starts(&self, t: i64) -> impl Iterator<Item = i64> + '_ {
        let last = self.last_window_start(t);
        (0..)
            .map(move |k| last - k * self.slide_ms)
            .take_while(move |s| *s + self.size_ms > t)
    }
}

/// `timestamp_millis(bigint)`, `timestamp_seconds(bigint)`: a timestamp from epoch units.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToTimestamp {
    name: &'static str,
    ms_per_unit: i64,
    signature: Signature,
}
impl ToTimestamp {
    fn new(name: &'static str, ms_per_unit: i64) -> Self {
        ToTimestamp {
            name,
            ms_per_unit,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}
impl ScalarUDFImpl for ToTimestamp {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = args.args[0].clone().into_array(args.number_rows)?;
        let a = cast(&a, &DataType::Int64)?;
        let a = a.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let out: TimestampMillisecondArray = a
            .iter()
            .map(|v| v.and_then(|v| v.checked_mul(self.ms_per_unit)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `unix_millis(timestamp)`: milliseconds since the epoch.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UnixMillis {
    signature: Signature,
}
impl UnixMillis {
    fn new() -> Self {
        UnixMillis {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}
impl ScalarUDFImpl for UnixMillis {
    fn name(&self) -> &str {
        "unix_millis"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ts = to_millis(&args.args[0].clone().into_array(args.number_rows)?)?;
        let out: Int64Array = ts.iter().collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `date_format(ts, 'yyyy-MM-dd HH:mm:ss')` with Spark's (Java) pattern letters
/// y, M, d, H, m, s, S; other letters and quoted text are copied. UTC.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DateFormat {
    signature: Signature,
}
impl DateFormat {
    fn new() -> Self {
        DateFormat {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}
impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let pattern = scalar_string(&args.args[1], "date_format")?;
        let ts = to_millis(&args.args[0].clone().into_array(args.number_rows)?)?;
        let mut b = StringBuilder::new();
        for t in ts.iter() {
            match t {
                Some(t) => b.append_value(format_java(t, &pattern)),
                None => b.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

/// Formats epoch milliseconds with a Java date pattern (the subset Spark users write).
pub fn format_java(ms: i64, pattern: &str) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = crate::tweets::civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, mi, s, milli) = (sod / 3600, (sod / 60) % 60, sod % 60, ms.rem_euclid(1000));
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        match c {
            'y' if n == 2 => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            'y' => out.push_str(&format!("{y:0n$}")),
            'M' => out.push_str(&format!("{mo:0n$}")),
            'd' => out.push_str(&format!("{d:0n$}")),
            'H' => out.push_str(&format!("{h:0n$}")),
            'm' => out.push_str(&format!("{mi:0n$}")),
            's' => out.push_str(&format!("{s:0n$}")),
            'S' => out.push_str(&format!("{milli:03}")[..n.min(3)]),
            '\'' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '\'' {
                    out.push(chars[j]);
                    j += 1;
                }
                i = j + 1;
                continue;
            }
            other => {
                for _ in 0..n {
                    out.push(other);
                }
            }
        }
        i += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_tumbling_and_sliding() {
        let tumbling = WindowSpec::from_strings("window", &["1 minute".into()]).unwrap();
        assert_eq!(
            tumbling.window_starts(125_000).collect::<Vec<_>>(),
            vec![120_000]
        );
        let sliding =
            WindowSpec::from_strings("window", &["1 minute".into(), "20 seconds".into()]).unwrap();
        assert_eq!(
            sliding.window_starts(125_000).collect::<Vec<_>>(),
            vec![120_000, 100_000, 80_000]
        );
        assert!(
            WindowSpec::from_strings("window", &["1 second".into(), "1 minute".into()]).is_err()
        );
    }

    #[test]
    fn java_date_patterns() {
        assert_eq!(
            format_java(1_539_202_764_123, "yyyy-MM-dd HH:mm:ss.SSS"),
            "2018-10-10 20:19:24.123"
        );
        assert_eq!(
            format_java(1_539_202_764_000, "yyyy-MM-dd-HH"),
            "2018-10-10-20"
        );
        assert_eq!(format_java(0, "'day' d"), "day 1");
    }

    #[test]
    fn json_column_with_bad_rows() {
        let fields = Fields::from(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let input = StringArray::from(vec![
            Some(r#"{"a": 1, "b": "x", "extra": [1]}"#),
            None,
            Some("not json"),
            Some(r#"{"a": "#),
            Some(r#"{"b": "y"}"#),
        ]);
        let s = parse_json_column(&input, &fields).unwrap();
        assert_eq!(s.len(), 5);
        assert!(s.is_valid(0) && s.is_null(1) && s.is_null(2) && s.is_null(3) && s.is_valid(4));
        let a = s
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(a.value(0), 1);
        assert_eq!(s.column(1).as_string::<i32>().value(4), "y");
    }
}
