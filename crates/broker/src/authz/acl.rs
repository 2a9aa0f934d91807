//! Kafka's ACL vocabulary: resource types, pattern types, operations, permissions (with
//! their wire codes from `org.apache.kafka.common.acl` / `.resource`), an ACL binding,
//! and the filters of DescribeAcls / DeleteAcls with Kafka's matching rules
//! (`ResourcePatternFilter.matches`, `AccessControlEntryFilter.matches`).
//!
//! Pure data; thread-safe (immutable values).

use serde::{Deserialize, Serialize};

/// Declares a wire-coded enum with its Kafka names (`TOPIC`, `READ`, ...).
macro_rules! coded {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:expr, $text:expr;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant),*];

            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code),* }
            }

            /// None for a code Kafka does not define (UNKNOWN included).
            pub fn from_code(code: i8) -> Option<$name> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            /// Kafka's name, as kafka-acls.sh prints it.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            /// Parses a Kafka name, case-insensitively, `-` or `_` separated.
            pub fn parse(s: &str) -> Option<$name> {
                let norm = s.trim().replace('-', "_").to_ascii_uppercase();
                Self::ALL_VALUES.iter().copied().find(|v| v.name() == norm)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

coded!(
    /// `org.apache.kafka.common.resource.ResourceType`.
    ResourceType {
        Any = 1, "ANY";
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
);

coded!(
    /// `org.apache.kafka.common.resource.PatternType`.
    PatternType {
        Any = 1, "ANY";
        Match = 2, "MATCH";
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

coded!(
    /// `org.apache.kafka.common.acl.AclOperation`.
    Operation {
        Any = 1, "ANY";
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
);

coded!(
    /// `org.apache.kafka.common.acl.AclPermissionType`.
    Permission {
        Any = 1, "ANY";
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

impl ResourceType {
    /// The operations each resource type has (Kafka's `AclEntry.supportedOperations`).
    pub fn supported_operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
            ResourceType::Any => &[],
        }
    }
}

/// The resource name that stands for every resource of a type (LITERAL `*`).
pub const WILDCARD: &str = "*";
/// The principal that stands for every principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The host that stands for every host.
pub const WILDCARD_HOST: &str = "*";
/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// One ACL: who (principal, host) may or may not (permission) do what (operation) to
/// which resources (type, name, pattern type).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Checks a binding to be created as Kafka's `AclControlManager.validateNewAcl` does.
    pub fn validate(&self) -> Result<(), String> {
        if matches!(self.resource_type, ResourceType::Any) {
            return Err("the resource type must be a specific type, not ANY".into());
        }
        if !matches!(self.pattern, PatternType::Literal | PatternType::Prefixed) {
            return Err(format!(
                "invalid pattern type {}: an ACL is LITERAL or PREFIXED",
                self.pattern
            ));
        }
        if matches!(self.operation, Operation::Any) {
            return Err("the operation must be a specific operation, not ANY".into());
        }
        if matches!(self.permission, Permission::Any) {
            return Err("the permission type must be ALLOW or DENY".into());
        }
        if self.name.is_empty() {
            return Err("the resource name must not be empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return Err(format!(
                "the only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "could not parse principal '{}': expected Type:name, e.g. User:alice",
                    self.principal
                ))
            }
        }
        if self.host.is_empty() {
            return Err("the host must not be empty (use * for every host)".into());
        }
        Ok(())
    }
}

/// A DescribeAcls / DeleteAcls filter: None means "any" for the strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub name: Option<String>,
    pub pattern: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclFilter {
    /// The DescribeAcls request for this filter (its fields are the filter's, on the wire).
    pub fn describe_request(&self) -> kafka_protocol::messages::DescribeAclsRequest {
        use kafka_protocol::protocol::StrBytes;
        let sb = |s: &str| StrBytes::from_string(s.to_string());
        kafka_protocol::messages::DescribeAclsRequest::default()
            .with_resource_type_filter(self.resource_type.code())
            .with_resource_name_filter(self.name.as_deref().map(sb))
            .with_pattern_type_filter(self.pattern.code())
            .with_principal_filter(self.principal.as_deref().map(sb))
            .with_host_filter(self.host.as_deref().map(sb))
            .with_operation(self.operation.code())
            .with_permission_type(self.permission.code())
    }

    /// Kafka's `AclBindingFilter.matches`.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        self.matches_pattern(acl)
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && (self.operation == Operation::Any || self.operation == acl.operation)
            && (self.permission == Permission::Any || self.permission == acl.permission)
    }

    /// Kafka's `ResourcePatternFilter.matches`: MATCH selects the patterns that would
    /// apply to the named resource (the literal name, the `*` wildcard, prefixes).
    fn matches_pattern(&self, acl: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != acl.resource_type {
            return false;
        }
        if !matches!(self.pattern, PatternType::Any | PatternType::Match)
            && self.pattern != acl.pattern
        {
            return false;
        }
        let Some(name) = &self.name else {
            return true;
        };
        if self.pattern == PatternType::Any || self.pattern == acl.pattern {
            return *name == acl.name;
        }
        match acl.pattern {
            PatternType::Literal => *name == acl.name || acl.name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&acl.name),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn acl(rt: ResourceType, name: &str, pattern: PatternType) -> AclBinding {
        AclBinding {
            resource_type: rt,
            name: name.into(),
            pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    fn filter(rt: ResourceType, name: Option<&str>, pattern: PatternType) -> AclFilter {
        AclFilter {
            resource_type: rt,
            name: name.map(String::from),
            pattern,
            principal: None,
            host: None,
            operation: Operation::Any,
            permission: Permission::Any,
        }
    }

    #[test]
    fn codes_and_names_round_trip() {
        for op in Operation::ALL_VALUES {
            assert_eq!(Operation::from_code(op.code()), Some(*op));
            assert_eq!(Operation::parse(&op.name().to_lowercase()), Some(*op));
        }
        assert_eq!(Operation::from_code(0), None);
        assert_eq!(
            ResourceType::parse("transactional-id"),
            Some(ResourceType::TransactionalId)
        );
        assert_eq!(ResourceType::Topic.code(), 2);
        assert_eq!(PatternType::Prefixed.code(), 4);
        assert_eq!(Permission::Allow.code(), 3);
    }

    #[test]
    fn filters_match_as_kafka() {
        use PatternType::{Any, Literal, Match, Prefixed};
        use ResourceType::{Group, Topic};
        const ANY_TYPE: ResourceType = ResourceType::Any;
        let lit = acl(Topic, "orders", Literal);
        let wild = acl(Topic, "*", Literal);
        let pre = acl(Topic, "ord", Prefixed);
        let grp = acl(Group, "orders", Literal);
        // ANY: exact name, any pattern type.
        let f = filter(Topic, Some("orders"), Any);
        assert!(f.matches(&lit) && !f.matches(&wild) && !f.matches(&pre) && !f.matches(&grp));
        // MATCH: every pattern that applies to "orders".
        let f = filter(Topic, Some("orders"), Match);
        assert!(f.matches(&lit) && f.matches(&wild) && f.matches(&pre) && !f.matches(&grp));
        assert!(!filter(Topic, Some("other"), Match).matches(&pre));
        // A specific pattern type: that type and that exact name.
        assert!(filter(Topic, Some("ord"), Prefixed).matches(&pre));
        assert!(!filter(Topic, Some("orders"), Prefixed).matches(&pre));
        assert!(!filter(Topic, Some("orders"), Prefixed).matches(&lit));
        // No name: every name of the type and pattern.
        assert!(filter(ANY_TYPE, None, Any).matches(&grp));
        assert!(filter(Topic, None, Literal).matches(&wild));
        assert!(!filter(Topic, None, Literal).matches(&pre));
        // Entry fields.
        let mut f = filter(Topic, None, Any);
        f.principal = Some("User:bob".into());
        assert!(!f.matches(&lit));
        f.principal = Some("User:alice".into());
        f.operation = Operation::Write;
        assert!(!f.matches(&lit));
        f.operation = Operation::Read;
        f.permission = Permission::Deny;
        assert!(!f.matches(&lit));
        f.permission = Permission::Allow;
        f.host = Some("10.0.0.1".into());
        assert!(!f.matches(&lit));
        f.host = Some("*".into());
        assert!(f.matches(&lit));
    }

    #[test]
    fn new_bindings_are_validated() {
        use PatternType::{Any, Literal, Match};
        use ResourceType::{Cluster, Topic};
        const ANY_TYPE: ResourceType = ResourceType::Any;
        assert!(acl(Topic, "t", Literal).validate().is_ok());
        assert!(acl(Topic, "t", Match).validate().is_err());
        assert!(acl(Topic, "t", Any).validate().is_err());
        assert!(acl(ANY_TYPE, "t", Literal).validate().is_err());
        assert!(acl(Cluster, "c", Literal).validate().is_err());
        assert!(acl(Cluster, CLUSTER_NAME, Literal).validate().is_ok());
        let mut a = acl(Topic, "t", Literal);
        a.principal = "alice".into();
        assert!(a.validate().is_err());
        let mut a = acl(Topic, "t", Literal);
        a.operation = Operation::Any;
        assert!(a.validate().is_err());
        let mut a = acl(Topic, "t", Literal);
        a.permission = Permission::Any;
        assert!(a.validate().is_err());
    }
}
