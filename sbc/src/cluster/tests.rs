//! The lease's decisions, without Redis (the real server is exercised by
//! the e2e pair tests in `tests/tests/e2e/cluster.rs`).

use super::*;

#[test]
fn a_standby_becomes_active_only_when_redis_names_it() {
    let mut lease = Lease::new("sbc-b");
    assert_eq!(lease.answered(None), None, "no answer changes nothing");
    assert_eq!(
        lease.answered(Some("sbc-a")).cloned(),
        Some(Role::Standby {
            holder: Some("sbc-a".into())
        })
    );
    assert_eq!(lease.answered(Some("sbc-a")), None, "the same holder again");
    assert_eq!(lease.answered(None), None, "Redis away: still standby");
    assert_eq!(lease.answered(Some("sbc-b")).cloned(), Some(Role::Active));
    assert_eq!(lease.answered(Some("sbc-b")), None, "renewed");
}

#[test]
fn an_active_node_keeps_serving_without_redis_and_steps_down_when_it_sees_another_holder() {
    let mut lease = Lease::new("sbc-a");
    lease.answered(Some("sbc-a"));
    for _ in 0..10 {
        assert_eq!(lease.answered(None), None, "a Redis outage stops nothing");
    }
    assert_eq!(*lease.role(), Role::Active);
    assert_eq!(
        lease.answered(Some("sbc-b")).cloned(),
        Some(Role::Lost {
            holder: "sbc-b".into()
        })
    );
    // Final for the process: even the lease back does not make it active.
    assert_eq!(lease.answered(Some("sbc-a")), None);
    assert!(matches!(lease.role(), Role::Lost { .. }));
}

#[test]
fn the_standby_asks_twice_as_often_as_the_active_renews() {
    let renew = Duration::from_millis(500);
    let mut lease = Lease::new("sbc-a");
    assert_eq!(lease.interval(renew), Duration::from_millis(250));
    lease.answered(Some("sbc-a"));
    assert_eq!(lease.interval(renew), renew);
}
