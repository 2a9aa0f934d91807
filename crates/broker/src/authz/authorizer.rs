//! The authorization decision, with the semantics of Kafka's `StandardAuthorizer`
//! (`StandardAuthorizerData.authorize`):
//!
//! 1. a super user (`super.users`) may do everything;
//! 2. the ACLs that apply to the resource are its LITERAL name, the LITERAL `*`
//!    wildcard, and every PREFIXED pattern the name starts with;
//! 3. of those, the ones for this principal (or `User:*`) and host (or `*`) decide:
//!    a DENY for the operation (or ALL) wins over any ALLOW;
//! 4. an ALLOW matches the operation, ALL, or an operation that implies it (READ, WRITE,
//!    DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS). A DENY
//!    implies nothing: DENY READ does not deny DESCRIBE;
//! 5. with no matching ALLOW, the request is denied, unless the resource has no ACL at
//!    all (for any principal) and `allow.everyone.if.no.acl.found` is true.
//!
//! Pure logic over a slice of ACLs; the caller holds them.

use super::acl::{
    AclBinding, Operation, PatternType, Permission, ResourceType, WILDCARD, WILDCARD_HOST,
    WILDCARD_PRINCIPAL,
};

/// The static policy: `super.users`, `allow.everyone.if.no.acl.found`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub super_users: Vec<String>,
    pub allow_if_no_acl: bool,
}

/// Who asks: the principal and the host (IP address as text) of the connection.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub principal: &'a str,
    pub host: &'a str,
}

/// Whether an ALLOW for `granted` permits `wanted`.
pub fn implies(granted: Operation, wanted: Operation) -> bool {
    use Operation::*;
    granted == wanted
        || granted == All
        || (wanted == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (wanted == DescribeConfigs && granted == AlterConfigs)
}

/// Whether `acl`'s resource pattern covers the resource `name` of its type.
fn pattern_applies(acl: &AclBinding, name: &str) -> bool {
    match acl.pattern {
        PatternType::Literal => acl.name == name || acl.name == WILDCARD,
        PatternType::Prefixed => name.starts_with(acl.name.as_str()),
        _ => false,
    }
}

fn entry_applies(acl: &AclBinding, who: Who<'_>) -> bool {
    (acl.principal == who.principal || acl.principal == WILDCARD_PRINCIPAL)
        && (acl.host == WILDCARD_HOST || acl.host == who.host)
}

impl Policy {
    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.iter().any(|s| s == principal)
    }

    /// May `who` perform `op` on the resource (`resource_type`, `name`)?
    pub fn authorize(
        &self,
        acls: &[AclBinding],
        who: Who<'_>,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.is_super_user(who.principal) {
            return true;
        }
        let mut resource_has_acls = false;
        let mut allowed = false;
        for acl in acls
            .iter()
            .filter(|a| a.resource_type == resource_type && pattern_applies(a, name))
        {
            resource_has_acls = true;
            if !entry_applies(acl, who) {
                continue;
            }
            match acl.permission {
                Permission::Deny if acl.operation == op || acl.operation == Operation::All => {
                    return false
                }
                Permission::Allow if implies(acl.operation, op) => allowed = true,
                _ => {}
            }
        }
        allowed || (!resource_has_acls && self.allow_if_no_acl)
    }

    /// May `who` perform `op` on at least one resource of `resource_type`? Kafka's
    /// `Authorizer.authorizeByResourceType` (used by InitProducerId for idempotent
    /// producers): some ALLOW pattern for the principal and host that no DENY covers.
    pub fn authorize_any(
        &self,
        acls: &[AclBinding],
        who: Who<'_>,
        op: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if self.is_super_user(who.principal) {
            return true;
        }
        let of_type: Vec<&AclBinding> = acls
            .iter()
            .filter(|a| a.resource_type == resource_type)
            .collect();
        let applies = |a: &&&AclBinding| {
            entry_applies(a, who) && (a.operation == op || a.operation == Operation::All)
        };
        let denies: Vec<&&AclBinding> = of_type
            .iter()
            .filter(|a| a.permission == Permission::Deny)
            .filter(applies)
            .collect();
        if denies
            .iter()
            .any(|d| d.pattern == PatternType::Literal && d.name == WILDCARD)
        {
            return false;
        }
        let denied = |allow: &AclBinding| {
            denies.iter().any(|d| match d.pattern {
                PatternType::Literal => {
                    allow.pattern == PatternType::Literal && d.name == allow.name
                }
                PatternType::Prefixed => allow.name.starts_with(d.name.as_str()),
                _ => false,
            })
        };
        let allowed = of_type
            .iter()
            .filter(|a| a.permission == Permission::Allow)
            .filter(applies)
            .any(|a| !denied(a));
        allowed || (of_type.is_empty() && self.allow_if_no_acl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;
    use PatternType::*;
    use ResourceType::*;

    const ME: Who<'static> = Who {
        principal: "User:ANONYMOUS",
        host: "127.0.0.1",
    };

    fn acl(
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        op: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            name: name.into(),
            pattern,
            principal: ME.principal.into(),
            host: "*".into(),
            operation: op,
            permission,
        }
    }

    fn allow(rt: ResourceType, name: &str, pattern: PatternType, op: Operation) -> AclBinding {
        acl(rt, name, pattern, op, Permission::Allow)
    }

    fn deny(rt: ResourceType, name: &str, pattern: PatternType, op: Operation) -> AclBinding {
        acl(rt, name, pattern, op, Permission::Deny)
    }

    fn strict() -> Policy {
        Policy::default()
    }

    #[test]
    fn literal_prefixed_and_wildcard_patterns() {
        let p = strict();
        let acls = [
            allow(Topic, "orders", Literal, Read),
            allow(Topic, "pay-", Prefixed, Write),
            allow(Group, "*", Literal, Read),
        ];
        assert!(p.authorize(&acls, ME, Read, Topic, "orders"));
        assert!(!p.authorize(&acls, ME, Read, Topic, "orders2"));
        assert!(p.authorize(&acls, ME, Write, Topic, "pay-eu"));
        assert!(!p.authorize(&acls, ME, Write, Topic, "pay"));
        assert!(p.authorize(&acls, ME, Read, Group, "anything"));
        // The type must match: a TOPIC ACL says nothing of another type's resource.
        assert!(!p.authorize(&acls, ME, Read, TransactionalId, "orders"));
    }

    #[test]
    fn deny_wins_over_allow_and_over_wildcards() {
        let p = strict();
        let acls = [
            allow(Topic, "*", Literal, All),
            deny(Topic, "secret", Prefixed, Read),
        ];
        assert!(p.authorize(&acls, ME, Read, Topic, "public"));
        assert!(!p.authorize(&acls, ME, Read, Topic, "secret-1"));
        // DENY READ does not deny what READ implies.
        assert!(p.authorize(&acls, ME, Describe, Topic, "secret-1"));
        let acls = [
            allow(Topic, "t", Literal, Read),
            deny(Topic, "t", Literal, All),
        ];
        assert!(!p.authorize(&acls, ME, Read, Topic, "t"));
        assert!(!p.authorize(&acls, ME, Describe, Topic, "t"));
    }

    #[test]
    fn implications_are_kafkas() {
        let p = strict();
        for granted in [Read, Write, Delete, Alter, Describe, All] {
            let acls = [allow(Topic, "t", Literal, granted)];
            assert!(p.authorize(&acls, ME, Describe, Topic, "t"), "{granted}");
        }
        for granted in [Create, AlterConfigs, DescribeConfigs, ClusterAction] {
            let acls = [allow(Topic, "t", Literal, granted)];
            assert!(!p.authorize(&acls, ME, Describe, Topic, "t"), "{granted}");
        }
        let acls = [allow(Topic, "t", Literal, AlterConfigs)];
        assert!(p.authorize(&acls, ME, DescribeConfigs, Topic, "t"));
        assert!(!p.authorize(&acls, ME, Alter, Topic, "t"));
        let acls = [allow(Topic, "t", Literal, Read)];
        assert!(!p.authorize(&acls, ME, Write, Topic, "t"));
        let acls = [allow(Cluster, "kafka-cluster", Literal, All)];
        for op in [
            Create,
            Alter,
            ClusterAction,
            IdempotentWrite,
            DescribeConfigs,
        ] {
            assert!(p.authorize(&acls, ME, op, Cluster, "kafka-cluster"), "{op}");
        }
    }

    #[test]
    fn principal_and_host_matching() {
        let p = strict();
        let mut other = allow(Topic, "t", Literal, Read);
        other.principal = "User:bob".into();
        assert!(!p.authorize(&[other.clone()], ME, Read, Topic, "t"));
        other.principal = "User:*".into();
        assert!(p.authorize(&[other.clone()], ME, Read, Topic, "t"));
        other.host = "10.1.1.1".into();
        assert!(!p.authorize(&[other.clone()], ME, Read, Topic, "t"));
        other.host = "127.0.0.1".into();
        assert!(p.authorize(&[other.clone()], ME, Read, Topic, "t"));
        // A DENY for another host does not apply here.
        let mut d = deny(Topic, "t", Literal, Read);
        d.host = "10.1.1.1".into();
        assert!(p.authorize(&[other, d], ME, Read, Topic, "t"));
    }

    #[test]
    fn super_users_and_the_no_acl_default() {
        let acls = [deny(Topic, "t", Literal, All)];
        let sup = Policy {
            super_users: vec!["User:admin".into(), ME.principal.into()],
            allow_if_no_acl: false,
        };
        assert!(sup.authorize(&acls, ME, Read, Topic, "t"));
        assert!(sup.authorize(&[], ME, Alter, Cluster, "kafka-cluster"));
        let open = Policy {
            super_users: vec![],
            allow_if_no_acl: true,
        };
        // No ACL on the resource at all: the default decides.
        assert!(open.authorize(&acls, ME, Read, Topic, "u"));
        assert!(!strict().authorize(&acls, ME, Read, Topic, "u"));
        // An ACL on the resource for someone else: no longer "no ACL found".
        let mut bob = allow(Topic, "u", Literal, Read);
        bob.principal = "User:bob".into();
        assert!(!open.authorize(&[bob], ME, Read, Topic, "u"));
        assert!(!open.authorize(&acls, ME, Read, Topic, "t"));
    }

    #[test]
    fn authorize_any_resource_of_a_type() {
        let p = strict();
        assert!(!p.authorize_any(&[], ME, Write, Topic));
        let acls = [allow(Topic, "t", Literal, Write)];
        assert!(p.authorize_any(&acls, ME, Write, Topic));
        assert!(!p.authorize_any(&acls, ME, Write, Group));
        let mut with_deny = acls.to_vec();
        with_deny.push(deny(Topic, "t", Literal, Write));
        assert!(!p.authorize_any(&with_deny, ME, Write, Topic));
        let with_wild_deny = [
            allow(Topic, "x", Prefixed, Write),
            deny(Topic, "*", Literal, Write),
        ];
        assert!(!p.authorize_any(&with_wild_deny, ME, Write, Topic));
        let prefix_deny = [
            allow(Topic, "ab", Literal, Write),
            deny(Topic, "a", Prefixed, Write),
        ];
        assert!(!p.authorize_any(&prefix_deny, ME, Write, Topic));
        let open = Policy {
            super_users: vec![],
            allow_if_no_acl: true,
        };
        assert!(open.authorize_any(&[], ME, Write, Topic));
    }
}
