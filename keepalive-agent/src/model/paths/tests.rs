use super::*;

fn subnet(last: u8) -> PathKey {
    PathKey::Subnet {
        net: std::net::IpAddr::from([192, 0, 2, last]),
        port: 5432,
    }
}

#[test]
fn bounds_bracket_the_timeout_and_name_the_profiles_that_fit() {
    let mut book = PathBook::new(8, 3600);
    let key = subnet(0);
    book.survived(key.clone(), 200.0, 1);
    book.survived(key.clone(), 300.0, 2);
    book.survived(key.clone(), 100.0, 3);
    book.fatal(key.clone(), 400.0, Fatal::Reset, 4);
    book.fatal(key.clone(), 360.0, Fatal::Blackhole, 5);
    let b = book.get(&key).unwrap();
    assert_eq!(b.survived.unwrap().gap_s, 300.0);
    assert_eq!(b.fatal.unwrap().gap_s, 360.0);
    assert_eq!((b.survived_count, b.resets, b.blackholes), (3, 1, 1));
    let fits = b.consistent_with();
    assert!(
        fits.contains(&"aws-nlb") && !fits.contains(&"azure-lb"),
        "{fits:?}"
    );
    // Nothing fatal seen: no timeout to be consistent with.
    book.survived(subnet(1), 50.0, 6);
    assert!(book.get(&subnet(1)).unwrap().consistent_with().is_empty());
}

#[test]
fn the_book_is_bounded_and_forgets() {
    let mut book = PathBook::new(2, 10);
    book.survived(subnet(0), 5.0, 0);
    book.fatal(subnet(1), 6.0, Fatal::Reset, 0);
    book.survived(subnet(2), 7.0, 0);
    assert_eq!(book.folded, 1);
    assert!(book.get(&PathKey::Other).is_some());
    // 11 s later every bound is stale: the groups go.
    book.expire(11_000_000_000);
    assert_eq!(book.len(), 0);
    // A stale bound is replaced even by a weaker observation.
    book.fatal(subnet(0), 6.0, Fatal::Reset, 0);
    book.fatal(subnet(0), 9.0, Fatal::Reset, 20_000_000_000);
    assert_eq!(book.get(&subnet(0)).unwrap().fatal.unwrap().gap_s, 9.0);
}

#[test]
fn a_servers_idle_closes_make_a_range_that_ages() {
    let mut book = PathBook::new(8, 10);
    let s = 1_000_000_000;
    book.peer_closed(subnet(0), 2.3, s);
    book.peer_closed(subnet(0), 2.0, 2 * s);
    book.peer_closed(subnet(0), 2.1, 3 * s);
    let c = book.get(&subnet(0)).unwrap().idle_closes.unwrap();
    assert_eq!((c.min_s, c.max_s, c.count, c.last_ns), (2.0, 2.3, 3, 3 * s));
    // A range not seen for longer than the memory starts again.
    book.peer_closed(subnet(0), 5.0, 14 * s);
    let c = book.get(&subnet(0)).unwrap().idle_closes.unwrap();
    assert_eq!((c.min_s, c.max_s, c.count), (5.0, 5.0, 1));
    book.expire(25 * s);
    assert_eq!(book.len(), 0);
}
