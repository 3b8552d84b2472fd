use super::*;

fn acl(rt: i8, name: &str, pt: i8, principal: &str, host: &str, o: i8, perm: i8) -> AclBinding {
    AclBinding {
        resource_type: rt,
        resource_name: name.into(),
        pattern_type: pt,
        principal: principal.into(),
        host: host.into(),
        operation: o,
        permission: perm,
    }
}

fn topic(name: &str, pt: i8, principal: &str, o: i8, perm: i8) -> AclBinding {
    acl(resource::TOPIC, name, pt, principal, "*", o, perm)
}

fn on(acls: Vec<AclBinding>) -> Authorizer {
    Authorizer {
        config: AuthorizerConfig {
            enabled: true,
            allow_if_no_acl: false,
            super_users: vec!["User:admin".into()],
        },
        acls,
    }
}

const ALICE: &str = "User:alice";
const HOST: &str = "10.0.0.1";

fn can(a: &Authorizer, o: i8, name: &str) -> bool {
    a.authorize(ALICE, HOST, o, resource::TOPIC, name)
}

#[test]
fn disabled_allows_everything() {
    let mut a = on(vec![topic(
        "t",
        pattern::LITERAL,
        "User:*",
        op::ALL,
        permission::DENY,
    )]);
    a.config.enabled = false;
    assert!(can(&a, op::WRITE, "t"));
}

#[test]
fn no_acl_found_follows_the_setting() {
    let mut a = on(vec![]);
    assert!(!can(&a, op::READ, "t"));
    a.config.allow_if_no_acl = true;
    assert!(can(&a, op::READ, "t"));
    // An ACL on the resource for someone else: no longer "no ACL found".
    a.acls = vec![topic(
        "t",
        pattern::LITERAL,
        "User:bob",
        op::READ,
        permission::ALLOW,
    )];
    assert!(!can(&a, op::READ, "t"));
    assert!(can(&a, op::READ, "other"));
}

#[test]
fn super_users_are_allowed_despite_deny() {
    let a = on(vec![topic(
        "t",
        pattern::LITERAL,
        "User:*",
        op::ALL,
        permission::DENY,
    )]);
    assert!(a.authorize("User:admin", HOST, op::WRITE, resource::TOPIC, "t"));
    assert!(!can(&a, op::WRITE, "t"));
}

#[test]
fn deny_wins_over_allow() {
    let a = on(vec![
        topic("t", pattern::LITERAL, ALICE, op::ALL, permission::ALLOW),
        topic("t", pattern::PREFIXED, "User:*", op::READ, permission::DENY),
    ]);
    assert!(!can(&a, op::READ, "t"));
    assert!(can(&a, op::WRITE, "t"));
    // A deny of another operation does not deny this one; a deny of ALL denies all.
    let a = on(vec![
        topic("t", pattern::LITERAL, ALICE, op::ALL, permission::ALLOW),
        topic("*", pattern::LITERAL, ALICE, op::ALL, permission::DENY),
    ]);
    assert!(!can(&a, op::DESCRIBE, "t"));
}

#[test]
fn implications_apply_to_allow_only() {
    for granted in [op::READ, op::WRITE, op::DELETE, op::ALTER] {
        let a = on(vec![topic(
            "t",
            pattern::LITERAL,
            ALICE,
            granted,
            permission::ALLOW,
        )]);
        assert!(can(&a, op::DESCRIBE, "t"), "{granted} implies DESCRIBE");
        assert!(!can(&a, op::DESCRIBE_CONFIGS, "t"));
    }
    let a = on(vec![topic(
        "t",
        pattern::LITERAL,
        ALICE,
        op::ALTER_CONFIGS,
        permission::ALLOW,
    )]);
    assert!(can(&a, op::DESCRIBE_CONFIGS, "t"));
    assert!(!can(&a, op::DESCRIBE, "t"));
    // DESCRIBE does not imply READ.
    let a = on(vec![topic(
        "t",
        pattern::LITERAL,
        ALICE,
        op::DESCRIBE,
        permission::ALLOW,
    )]);
    assert!(!can(&a, op::READ, "t"));
    // A DENY of READ does not deny DESCRIBE (which an ALLOW of ALL grants).
    let a = on(vec![
        topic("t", pattern::LITERAL, ALICE, op::ALL, permission::ALLOW),
        topic("t", pattern::LITERAL, ALICE, op::READ, permission::DENY),
    ]);
    assert!(can(&a, op::DESCRIBE, "t"));
    assert!(!can(&a, op::READ, "t"));
}

#[test]
fn patterns_literal_wildcard_prefixed() {
    let a = on(vec![
        topic(
            "orders",
            pattern::PREFIXED,
            ALICE,
            op::READ,
            permission::ALLOW,
        ),
        topic("logs", pattern::LITERAL, ALICE, op::READ, permission::ALLOW),
    ]);
    assert!(can(&a, op::READ, "orders"));
    assert!(can(&a, op::READ, "orders-eu"));
    assert!(!can(&a, op::READ, "order"));
    assert!(can(&a, op::READ, "logs"));
    assert!(!can(&a, op::READ, "logs-2"));
    let a = on(vec![topic(
        "*",
        pattern::LITERAL,
        ALICE,
        op::READ,
        permission::ALLOW,
    )]);
    assert!(can(&a, op::READ, "anything"));
    // A PREFIXED "*" is a prefix, not a wildcard.
    let a = on(vec![topic(
        "*",
        pattern::PREFIXED,
        ALICE,
        op::READ,
        permission::ALLOW,
    )]);
    assert!(!can(&a, op::READ, "anything"));
    // Resource types do not mix.
    let a = on(vec![acl(
        resource::GROUP,
        "*",
        pattern::LITERAL,
        ALICE,
        "*",
        op::READ,
        permission::ALLOW,
    )]);
    assert!(!can(&a, op::READ, "t"));
    assert!(a.authorize(ALICE, HOST, op::READ, resource::GROUP, "g"));
}

#[test]
fn principals_and_hosts() {
    let a = on(vec![acl(
        resource::TOPIC,
        "t",
        pattern::LITERAL,
        "User:*",
        HOST,
        op::READ,
        permission::ALLOW,
    )]);
    assert!(a.authorize("User:bob", HOST, op::READ, resource::TOPIC, "t"));
    assert!(!a.authorize("User:bob", "10.0.0.2", op::READ, resource::TOPIC, "t"));
    let a = on(vec![topic(
        "t",
        pattern::LITERAL,
        "User:bob",
        op::READ,
        permission::ALLOW,
    )]);
    assert!(!can(&a, op::READ, "t"));
    // "Group:*" is not a wildcard for users.
    let a = on(vec![topic(
        "t",
        pattern::LITERAL,
        "Group:*",
        op::READ,
        permission::ALLOW,
    )]);
    assert!(!can(&a, op::READ, "t"));
}

#[test]
fn operations_bit_sets() {
    let a = on(vec![topic(
        "t",
        pattern::LITERAL,
        ALICE,
        op::READ,
        permission::ALLOW,
    )]);
    let bits = a.operations(ALICE, HOST, resource::TOPIC, "t", &TOPIC_OPERATIONS);
    assert_eq!(bits, (1 << op::READ) | (1 << op::DESCRIBE));
    let mut off = a.clone();
    off.config.enabled = false;
    let all = TOPIC_OPERATIONS.iter().fold(0, |b, o| b | (1 << o));
    assert_eq!(
        off.operations(ALICE, HOST, resource::TOPIC, "t", &TOPIC_OPERATIONS),
        all
    );
}

#[test]
fn validation_refuses_what_kafka_refuses() {
    let good = topic("t", pattern::LITERAL, ALICE, op::READ, permission::ALLOW);
    assert_eq!(good.validate(), Ok(()));
    let mut b = good.clone();
    b.resource_type = resource::ANY;
    assert!(b.validate().is_err());
    let mut b = good.clone();
    b.pattern_type = pattern::MATCH;
    assert!(b.validate().is_err());
    let mut b = good.clone();
    b.operation = op::ANY;
    assert!(b.validate().is_err());
    let mut b = good.clone();
    b.permission = permission::ANY;
    assert!(b.validate().is_err());
    let mut b = good.clone();
    b.principal = "alice".into();
    assert!(b.validate().is_err());
    let b = acl(
        resource::CLUSTER,
        "c",
        pattern::LITERAL,
        ALICE,
        "*",
        op::ALTER,
        permission::ALLOW,
    );
    assert_eq!(b.validate(), Err(AclError::ClusterName("c".into())));
}

fn filter(name: Option<&str>, pt: i8) -> AclFilter {
    AclFilter {
        resource_type: resource::ANY,
        resource_name: name.map(str::to_string),
        pattern_type: pt,
        principal: None,
        host: None,
        operation: op::ANY,
        permission: permission::ANY,
    }
}

#[test]
fn filters_any_literal_prefixed_match() {
    let lit = topic(
        "orders-eu",
        pattern::LITERAL,
        ALICE,
        op::READ,
        permission::ALLOW,
    );
    let pre = topic(
        "orders",
        pattern::PREFIXED,
        ALICE,
        op::READ,
        permission::ALLOW,
    );
    let wild = topic("*", pattern::LITERAL, ALICE, op::READ, permission::DENY);
    let all = [&lit, &pre, &wild];
    let sel = |f: &AclFilter| all.iter().filter(|b| f.matches(b)).count();
    assert_eq!(sel(&filter(None, pattern::ANY)), 3);
    assert_eq!(sel(&filter(None, pattern::LITERAL)), 2);
    assert_eq!(sel(&filter(Some("orders"), pattern::ANY)), 1);
    assert_eq!(sel(&filter(Some("orders"), pattern::LITERAL)), 0);
    assert_eq!(sel(&filter(Some("orders"), pattern::PREFIXED)), 1);
    // MATCH: every binding that applies to the resource named.
    assert_eq!(sel(&filter(Some("orders-eu"), pattern::MATCH)), 3);
    assert_eq!(sel(&filter(Some("other"), pattern::MATCH)), 1);
    let mut f = filter(None, pattern::ANY);
    f.permission = permission::DENY;
    assert_eq!(sel(&f), 1);
    f.permission = permission::ANY;
    f.principal = Some("User:bob".into());
    assert_eq!(sel(&f), 0);
    f.principal = Some(ALICE.into());
    f.operation = op::READ;
    f.resource_type = resource::TOPIC;
    assert_eq!(sel(&f), 3);
    f.resource_type = resource::GROUP;
    assert_eq!(sel(&f), 0);
}

#[test]
fn proto_round_trip() {
    let b = topic("t", pattern::PREFIXED, ALICE, op::WRITE, permission::DENY);
    assert_eq!(AclBinding::from_proto(&b.to_proto()), b);
    let f = filter(Some("x"), pattern::MATCH);
    assert_eq!(AclFilter::from_proto(&f.to_proto()), f);
}

#[test]
fn authorize_any_of_a_type() {
    let a = on(vec![topic(
        "x",
        pattern::PREFIXED,
        ALICE,
        op::WRITE,
        permission::ALLOW,
    )]);
    assert!(a.authorize_any(ALICE, HOST, op::WRITE, resource::TOPIC));
    assert!(!a.authorize_any("User:bob", HOST, op::WRITE, resource::TOPIC));
    // An ALLOW covered by a DENY of a shorter prefix grants nothing.
    let a = on(vec![
        topic("xy", pattern::LITERAL, ALICE, op::WRITE, permission::ALLOW),
        topic("x", pattern::PREFIXED, ALICE, op::WRITE, permission::DENY),
    ]);
    assert!(!a.authorize_any(ALICE, HOST, op::WRITE, resource::TOPIC));
    let a = on(vec![
        topic("x", pattern::LITERAL, ALICE, op::WRITE, permission::ALLOW),
        topic("*", pattern::LITERAL, "User:*", op::ALL, permission::DENY),
    ]);
    assert!(!a.authorize_any(ALICE, HOST, op::WRITE, resource::TOPIC));
    // allow.everyone.if.no.acl.found: allowed while some name has no ACL.
    let mut a = on(vec![]);
    assert!(!a.authorize_any(ALICE, HOST, op::WRITE, resource::TOPIC));
    a.config.allow_if_no_acl = true;
    assert!(a.authorize_any(ALICE, HOST, op::WRITE, resource::TOPIC));
    a.acls = vec![topic(
        "x",
        pattern::LITERAL,
        "User:*",
        op::WRITE,
        permission::DENY,
    )];
    assert!(a.authorize_any(ALICE, HOST, op::WRITE, resource::TOPIC));
    a.acls = vec![topic(
        "*",
        pattern::LITERAL,
        "User:bob",
        op::WRITE,
        permission::ALLOW,
    )];
    assert!(!a.authorize_any(ALICE, HOST, op::WRITE, resource::TOPIC));
}
