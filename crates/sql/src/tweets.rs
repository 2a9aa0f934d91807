//! A deterministic generator of tweets in the Twitter v1.1 JSON shape.
//!
//! Everything a tweet contains is a pure function of the seed, the start time and the
//! tweet's index, so a test can regenerate the same stream and compute the answer a query
//! must give without reading the topic back. Hashtag popularity is Zipf-skewed and drifts:
//! each tag's weight follows a slow wave with its own phase, so the top of the ranking
//! changes every few minutes of event time and trends appear and fade.
//!
//! Event time: tweet `i` has `timestamp_ms = start_ms + i * 1000 / events_per_second`, moved
//! back by a small jitter (out-of-order arrival), and a small fraction is very late, so
//! watermarks have something to drop.
//!
//! Not thread-safe to share; cheap to create one per thread.

use serde_json::{json, Value};

/// A small, fast, seedable PRNG (xoshiro256**), so generated data never depends on the
/// version of an external crate.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); n must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Generator settings. `Default` gives the demo's settings with a fixed start time.
#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Event time of tweet 0, in ms since the epoch.
    pub start_ms: i64,
    /// Event-time density: tweets per second of event time.
    pub events_per_second: u64,
    /// Largest backwards jitter of an ordinary tweet's event time, ms.
    pub max_jitter_ms: i64,
    /// One tweet in this many is very late (by `very_late_ms`); 0 disables.
    pub very_late_every: u64,
    pub very_late_ms: i64,
    /// Period of a hashtag's popularity wave, ms of event time.
    pub drift_period_ms: i64,
    pub num_hashtags: usize,
    pub num_users: usize,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            start_ms: 1_700_000_000_000,
            events_per_second: 1000,
            max_jitter_ms: 2_000,
            very_late_every: 997,
            very_late_ms: 180_000,
            drift_period_ms: 600_000,
            num_hashtags: 120,
            num_users: 5_000,
        }
    }
}

const WORDS: &[&str] = &[
    "stream", "kafka", "data", "today", "great", "news", "launch", "release", "people", "city",
    "music", "game", "coffee", "morning", "night", "team", "win", "love", "new", "update",
    "broker", "query", "window", "fast", "latency", "cloud", "team", "match", "goal", "movie",
    "weather", "rain", "sun", "travel", "food", "code", "rust", "spark", "sql", "event",
];
const TAG_STEMS: &[&str] = &[
    "rust", "kafka", "spark", "bigdata", "ai", "ml", "worldcup", "music", "news", "tech",
    "startup", "crypto", "gaming", "movies", "travel", "food", "fitness", "science", "space",
    "climate", "election", "football", "nba", "f1", "anime", "kpop", "art", "books", "photo",
    "fashion",
];
const LANGS: &[(&str, u32)] = &[
    ("en", 50),
    ("es", 12),
    ("ja", 10),
    ("pt", 8),
    ("ar", 5),
    ("fr", 4),
    ("de", 3),
    ("tr", 3),
    ("ko", 2),
    ("und", 3),
];
const LOCATIONS: &[&str] = &[
    "London",
    "New York",
    "Tokyo",
    "São Paulo",
    "Paris",
    "Berlin",
    "Madrid",
    "Seoul",
    "",
    "Lagos",
];
const SOURCES: &[&str] = &[
    "<a href=\"http://twitter.com/download/iphone\" rel=\"nofollow\">Twitter for iPhone</a>",
    "<a href=\"http://twitter.com/download/android\" rel=\"nofollow\">Twitter for Android</a>",
    "<a href=\"https://mobile.twitter.com\" rel=\"nofollow\">Twitter Web App</a>",
];

/// A user of the generated stream.
#[derive(Clone, Debug)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub screen_name: String,
    pub location: &'static str,
    pub followers_count: u64,
    pub friends_count: u64,
    pub lang: &'static str,
    pub verified: bool,
}

/// One generated tweet, with the fields queries look at kept typed for tests.
#[derive(Clone, Debug)]
pub struct Tweet {
    pub index: u64,
    pub id: u64,
    pub timestamp_ms: i64,
    pub lang: &'static str,
    pub user: usize,
    pub hashtags: Vec<String>,
    pub text: String,
    pub retweet_count: u64,
    pub favorite_count: u64,
    source: &'static str,
    mention: Option<usize>,
    url: Option<String>,
}

/// The generator: `tweet(i)` is a pure function of the config and `i`.
pub struct Generator {
    config: GeneratorConfig,
    users: Vec<User>,
    tags: Vec<String>,
    /// Cached cumulative hashtag weights for one second of event time.
    weights_second: i64,
    cumulative: Vec<f64>,
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Generator {
        assert!(
            config.events_per_second > 0,
            "events_per_second must be positive"
        );
        assert!(config.num_hashtags > 0 && config.num_users > 0);
        let mut rng = Rng::new(config.seed ^ 0x5EED_0000_0000_0001);
        let users = (0..config.num_users)
            .map(|i| {
                let first = WORDS[rng.below(WORDS.len() as u64) as usize];
                let second = WORDS[rng.below(WORDS.len() as u64) as usize];
                let lang = pick_lang(&mut rng);
                User {
                    id: 10_000_000 + i as u64 * 7919 + rng.below(7919),
                    name: format!("{} {}", capitalize(first), capitalize(second)),
                    screen_name: format!("{first}_{second}{i}"),
                    location: LOCATIONS[rng.below(LOCATIONS.len() as u64) as usize],
                    // Heavy-tailed follower counts.
                    followers_count: (10.0 * (1.0 / (1.0 - rng.next_f64() * 0.9999)).powf(1.3))
                        as u64,
                    friends_count: rng.below(2_000),
                    lang,
                    verified: rng.below(100) == 0,
                }
            })
            .collect();
        let tags = (0..config.num_hashtags)
            .map(|i| {
                let stem = TAG_STEMS[i % TAG_STEMS.len()];
                if i < TAG_STEMS.len() {
                    stem.to_string()
                } else {
                    format!("{stem}{}", i / TAG_STEMS.len())
                }
            })
            .collect();
        Generator {
            config,
            users,
            tags,
            weights_second: i64::MIN,
            cumulative: Vec::new(),
        }
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// Event time of tweet `i` before jitter.
    fn base_time_ms(&self, i: u64) -> i64 {
        self.config.start_ms + (i as i128 * 1000 / self.config.events_per_second as i128) as i64
    }

    /// Weight of hashtag `k` at event time `t_ms`: Zipf by base rank, times a wave.
    fn weight(&self, k: usize, t_ms: i64) -> f64 {
        let zipf = 1.0 / ((k + 1) as f64).powf(1.1);
        let phase = (k as f64 * 0.618_033_988_7).fract();
        let x = t_ms as f64 / self.config.drift_period_ms as f64 + phase;
        let wave = 1.0 + 0.9 * (std::f64::consts::TAU * x).sin();
        // Tags far down the Zipf list get a boost at the crest of their wave: a trend.
        zipf * wave * wave * wave + 0.02 * wave.powi(6) / 8.0
    }

    fn refresh_weights(&mut self, t_ms: i64) {
        let second = t_ms.div_euclid(1000);
        if second == self.weights_second {
            return;
        }
        self.weights_second = second;
        self.cumulative.clear();
        let mut total = 0.0;
        for k in 0..self.tags.len() {
            total += self.weight(k, second * 1000);
            self.cumulative.push(total);
        }
    }

    fn pick_tag(&self, rng: &mut Rng) -> usize {
        let total = *self.cumulative.last().expect("weights computed");
        let x = rng.next_f64() * total;
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.tags.len() - 1)
    }

    /// The `i`-th tweet.
    pub fn tweet(&mut self, i: u64) -> Tweet {
        let mut rng = Rng::new(self.config.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ i);
        let base = self.base_time_ms(i);
        self.refresh_weights(base);
        let mut ts = base - rng.below(self.config.max_jitter_ms as u64 + 1) as i64;
        if self.config.very_late_every > 0 && rng.below(self.config.very_late_every) == 0 {
            ts -= self.config.very_late_ms;
        }
        let user = rng.below(self.users.len() as u64) as usize;
        let lang = if rng.below(4) == 0 {
            pick_lang(&mut rng)
        } else {
            self.users[user].lang
        };
        let n_tags = match rng.below(100) {
            0..=39 => 0,
            40..=74 => 1,
            75..=92 => 2,
            _ => 3,
        };
        let mut hashtags: Vec<String> = Vec::with_capacity(n_tags);
        for _ in 0..n_tags {
            let tag = &self.tags[self.pick_tag(&mut rng)];
            if !hashtags.iter().any(|t| t == tag) {
                hashtags.push(tag.clone());
            }
        }
        let n_words = 3 + rng.below(10) as usize;
        let mut text = String::with_capacity(80);
        for w in 0..n_words {
            if w > 0 {
                text.push(' ');
            }
            text.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        }
        let mention = (rng.below(5) == 0).then(|| rng.below(self.users.len() as u64) as usize);
        if let Some(m) = mention {
            text = format!("@{} {text}", self.users[m].screen_name);
        }
        for tag in &hashtags {
            text.push_str(" #");
            text.push_str(tag);
        }
        let url =
            (rng.below(6) == 0).then(|| format!("https://t.co/{:010x}", rng.next_u64() >> 24));
        if let Some(u) = &url {
            text.push(' ');
            text.push_str(u);
        }
        let id = (((ts - 1_288_834_974_657).max(0) as u64) << 22) | (i & 0x3F_FFFF);
        Tweet {
            index: i,
            id,
            timestamp_ms: ts,
            lang,
            user,
            hashtags,
            text,
            retweet_count: (rng.next_f64().powi(8) * 5000.0) as u64,
            favorite_count: (rng.next_f64().powi(6) * 20000.0) as u64,
            source: SOURCES[rng.below(SOURCES.len() as u64) as usize],
            mention,
            url,
        }
    }

    /// The tweet as a Twitter v1.1 JSON object.
    pub fn to_json(&self, t: &Tweet) -> Value {
        let u = &self.users[t.user];
        let mut offset = 0usize;
        let mut hashtags = Vec::new();
        for tag in &t.hashtags {
            let needle = format!("#{tag}");
            if let Some(pos) = t.text[offset..].find(&needle) {
                let start = char_index(&t.text, offset + pos);
                let end = start + needle.chars().count();
                hashtags.push(json!({"text": tag, "indices": [start, end]}));
                offset += pos + needle.len();
            }
        }
        let mentions: Vec<Value> = t
            .mention
            .map(|m| {
                let mu = &self.users[m];
                vec![json!({
                    "screen_name": mu.screen_name, "name": mu.name, "id": mu.id,
                    "id_str": mu.id.to_string(), "indices": [0, 1 + mu.screen_name.chars().count()]
                })]
            })
            .unwrap_or_default();
        let urls: Vec<Value> = t
            .url
            .iter()
            .map(|url| {
                let start = char_index(&t.text, t.text.find(url.as_str()).unwrap_or(0));
                json!({"url": url, "expanded_url": url, "display_url": url.trim_start_matches("https://"),
                       "indices": [start, start + url.chars().count()]})
            })
            .collect();
        json!({
            "created_at": twitter_date(t.timestamp_ms),
            "id": t.id,
            "id_str": t.id.to_string(),
            "text": t.text,
            "source": t.source,
            "truncated": false,
            "user": {
                "id": u.id,
                "id_str": u.id.to_string(),
                "name": u.name,
                "screen_name": u.screen_name,
                "location": u.location,
                "followers_count": u.followers_count,
                "friends_count": u.friends_count,
                "lang": u.lang,
                "verified": u.verified,
            },
            "entities": {"hashtags": hashtags, "urls": urls, "user_mentions": mentions},
            "lang": t.lang,
            "retweet_count": t.retweet_count,
            "favorite_count": t.favorite_count,
            "timestamp_ms": t.timestamp_ms.to_string(),
        })
    }
}

fn char_index(s: &str, byte: usize) -> usize {
    s[..byte].chars().count()
}

fn pick_lang(rng: &mut Rng) -> &'static str {
    let total: u32 = LANGS.iter().map(|l| l.1).sum();
    let mut x = rng.below(total as u64) as u32;
    for (lang, w) in LANGS {
        if x < *w {
            return lang;
        }
        x -= w;
    }
    LANGS[0].0
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `Wed Oct 10 20:19:24 +0000 2018`, Twitter's `created_at` format, in UTC.
pub fn twitter_date(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} +0000 {}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        y
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_different_seed_differs() {
        let mut a = Generator::new(GeneratorConfig::default());
        let mut b = Generator::new(GeneratorConfig::default());
        let mut c = Generator::new(GeneratorConfig {
            seed: 7,
            ..GeneratorConfig::default()
        });
        let ja: Vec<String> = (0..200)
            .map(|i| {
                let t = a.tweet(i);
                a.to_json(&t).to_string()
            })
            .collect();
        let jb: Vec<String> = (0..200)
            .map(|i| {
                let t = b.tweet(i);
                b.to_json(&t).to_string()
            })
            .collect();
        let jc: Vec<String> = (0..200)
            .map(|i| {
                let t = c.tweet(i);
                c.to_json(&t).to_string()
            })
            .collect();
        assert_eq!(ja, jb);
        assert_ne!(ja, jc);
    }

    #[test]
    fn json_has_the_v1_1_shape_and_hashtag_indices_point_at_the_tags() {
        let mut g = Generator::new(GeneratorConfig::default());
        for i in 0..500 {
            let t = g.tweet(i);
            let v = g.to_json(&t);
            for key in [
                "created_at",
                "id",
                "id_str",
                "text",
                "source",
                "user",
                "entities",
                "lang",
                "retweet_count",
                "favorite_count",
                "timestamp_ms",
            ] {
                assert!(v.get(key).is_some(), "missing {key}");
            }
            let text: Vec<char> = t.text.chars().collect();
            for h in v["entities"]["hashtags"].as_array().unwrap() {
                let s = h["indices"][0].as_u64().unwrap() as usize;
                let e = h["indices"][1].as_u64().unwrap() as usize;
                let got: String = text[s..e].iter().collect();
                assert_eq!(got, format!("#{}", h["text"].as_str().unwrap()));
            }
        }
    }

    #[test]
    fn hashtags_are_skewed_and_the_leader_drifts() {
        let mut g = Generator::new(GeneratorConfig::default());
        let top = |g: &mut Generator, from: u64| {
            let mut counts = std::collections::HashMap::<String, u64>::new();
            for i in from..from + 20_000 {
                for h in g.tweet(i).hashtags {
                    *counts.entry(h).or_default() += 1;
                }
            }
            let mut v: Vec<_> = counts.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v
        };
        let early = top(&mut g, 0);
        // The most popular tag is far more frequent than the median one.
        assert!(early[0].1 > 10 * early[early.len() / 2].1);
        let later = top(&mut g, 300_000);
        assert_ne!(
            early[0].0, later[0].0,
            "the leading hashtag should change over time"
        );
    }

    #[test]
    fn twitter_date_format() {
        assert_eq!(
            twitter_date(1_539_202_764_000),
            "Wed Oct 10 20:19:24 +0000 2018"
        );
        assert_eq!(twitter_date(0), "Thu Jan 01 00:00:00 +0000 1970");
    }
}
