//! KIP-430 authorized operations. Runnel has no authorizer, and Kafka without one
//! reports every operation its resource type supports (`AclEntry.supportedOperations`),
//! as a bitfield of `AclOperation` codes.

/// Kafka's "not requested" value for authorized-operations fields.
pub const OMITTED: i32 = i32::MIN;

// AclOperation codes.
const READ: u32 = 3;
const WRITE: u32 = 4;
const CREATE: u32 = 5;
const DELETE: u32 = 6;
const ALTER: u32 = 7;
const DESCRIBE: u32 = 8;
const CLUSTER_ACTION: u32 = 9;
const DESCRIBE_CONFIGS: u32 = 10;
const ALTER_CONFIGS: u32 = 11;
const IDEMPOTENT_WRITE: u32 = 12;

const fn bits(ops: &[u32]) -> i32 {
    let mut field = 0i32;
    let mut i = 0;
    while i < ops.len() {
        field |= 1 << ops[i];
        i += 1;
    }
    field
}

pub const TOPIC: i32 = bits(&[
    READ,
    WRITE,
    CREATE,
    DESCRIBE,
    DELETE,
    ALTER,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
]);
/// Kafka 4.0 (group configs): READ, DESCRIBE, DELETE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub const GROUP: i32 = bits(&[READ, DESCRIBE, DELETE, DESCRIBE_CONFIGS, ALTER_CONFIGS]);
pub const CLUSTER: i32 = bits(&[
    CREATE,
    CLUSTER_ACTION,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
    IDEMPOTENT_WRITE,
    ALTER,
    DESCRIBE,
]);

/// `ops` when the request asked for them, else the "omitted" value.
pub fn if_requested(requested: bool, ops: i32) -> i32 {
    if requested {
        ops
    } else {
        OMITTED
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bitfields_match_kafka() {
        // Values a Kafka 4.0 broker without an authorizer sends.
        assert_eq!(super::TOPIC, 0b1101_1111_1000);
        assert_eq!(super::CLUSTER, 0b1_1111_1010_0000);
        assert_eq!(super::GROUP, 0b1101_0100_1000);
    }
}
