use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;

fn target(port: u16, priority: u16, weight: u16) -> Target {
    Target {
        addr: SocketAddr::from(([192, 0, 2, 1], port)),
        transport: DnsTransport::Udp,
        priority,
        weight,
        host: format!("t{port}.example.net"),
    }
}

/// A deterministic stand-in for the core's injected randomness.
fn lcg(seed: u64) -> impl FnMut() -> u32 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    }
}

#[test]
fn lower_priority_always_comes_first() {
    let targets = [target(3, 20, 100), target(1, 10, 0), target(2, 10, 5)];
    for seed in 0..50 {
        let order = order(&targets, lcg(seed));
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], 0, "priority 20 is last whatever its weight");
        assert!(order[..2].contains(&1) && order[..2].contains(&2));
    }
}

#[test]
fn weights_share_first_picks_in_proportion() {
    // RFC 2782 draws from 0 to the sum *inclusive* (0..=4 here) and takes
    // the first running sum >= the draw: weight 3 against weight 1 is first
    // for draws 0-3, 4 times in 5; weight 1 for draw 4 only.
    let targets = [target(1, 0, 3), target(2, 0, 1)];
    let mut random = lcg(7);
    let mut first = HashMap::new();
    for _ in 0..4000 {
        *first.entry(order(&targets, &mut random)[0]).or_insert(0) += 1;
    }
    let heavy = first[&0];
    assert!(
        (3000..=3400).contains(&heavy),
        "weight 3 against 1 first {heavy} times in 4000 (expected about 3200)"
    );
}

#[test]
fn the_draw_decides_exactly_as_rfc_2782_says() {
    // Sum 0+2+3 = 5; the draw is taken modulo 6. Running sums: 0, 2, 5.
    let targets = [target(1, 0, 2), target(2, 0, 0), target(3, 0, 3)];
    // Draw 0: the weight-0 target (placed first) is picked.
    assert_eq!(order(&targets, || 0)[0], 1);
    // Draw 2: running sum 0, then 2 >= 2: the weight-2 target.
    assert_eq!(order(&targets, || 2)[0], 0);
    // Draw 3: running sums 0, 2, 5: the weight-3 target.
    assert_eq!(order(&targets, || 3)[0], 2);
    // A zero-weight target alone with others is still placed eventually.
    let all = order(&targets, || 5);
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [0, 1, 2]);
}

#[test]
fn only_zero_weights_keep_every_target() {
    let targets = [target(1, 0, 0), target(2, 0, 0), target(3, 1, 0)];
    assert_eq!(order(&targets, lcg(1)).len(), 3);
    assert_eq!(order(&[], lcg(1)), Vec::<usize>::new());
}

#[test]
#[allow(clippy::disallowed_methods)] // the fake clock's origin
fn cache_serves_within_the_ttl_and_forgets_after() {
    let t0 = Instant::now();
    let mut cache = TtlCache::default();
    cache.insert(t0, "sip.example.net", 1, Duration::from_secs(30));
    cache.insert(t0, "sip2.example.net", 2, Duration::from_secs(5));
    assert_eq!(cache.next_expiry(), Some(t0 + Duration::from_secs(5)));
    assert_eq!(
        cache.get(t0 + Duration::from_secs(4), &"sip2.example.net"),
        Some(&2)
    );
    assert_eq!(
        cache.get_with_ttl(t0 + Duration::from_secs(4), &"sip2.example.net"),
        Some((&2, Duration::from_secs(1))),
        "what a cache passes on is the TTL left"
    );
    assert_eq!(
        cache.get(t0 + Duration::from_secs(5), &"sip2.example.net"),
        None
    );
    assert_eq!(
        cache.len(),
        1,
        "the expired entry is dropped when looked up"
    );
    assert_eq!(
        cache.get(t0 + Duration::from_secs(29), &"sip.example.net"),
        Some(&1)
    );
    assert_eq!(
        cache.get(t0 + Duration::from_secs(30), &"sip.example.net"),
        None
    );
    assert!(cache.is_empty());
    // A fresh answer after expiry is served again.
    cache.insert(
        t0 + Duration::from_secs(31),
        "sip.example.net",
        3,
        Duration::from_secs(1),
    );
    assert_eq!(
        cache.get(t0 + Duration::from_secs(31), &"sip.example.net"),
        Some(&3)
    );
}

#[test]
#[allow(clippy::disallowed_methods)] // the fake clock's origin
fn refresh_follows_the_ttl_within_bounds() {
    let t0 = Instant::now();
    let (floor, ceiling) = (Duration::from_secs(1), Duration::from_secs(3600));
    assert_eq!(
        refresh_at(t0, Duration::from_secs(30), floor, ceiling),
        t0 + Duration::from_secs(30)
    );
    assert_eq!(refresh_at(t0, Duration::ZERO, floor, ceiling), t0 + floor);
    assert_eq!(
        refresh_at(t0, Duration::from_secs(86400), floor, ceiling),
        t0 + ceiling
    );
}

#[test]
fn naptr_services_map_to_transports() {
    assert_eq!(
        DnsTransport::from_naptr_service(b"SIP+D2U"),
        Some(DnsTransport::Udp)
    );
    assert_eq!(
        DnsTransport::from_naptr_service(b"sip+d2t"),
        Some(DnsTransport::Tcp)
    );
    assert_eq!(
        DnsTransport::from_naptr_service(b"SIPS+D2T"),
        Some(DnsTransport::Tls)
    );
    assert_eq!(DnsTransport::from_naptr_service(b"SIP+D2S"), None);
    assert_eq!(DnsTransport::Tls.srv_prefix(), "_sips._tcp");
}
