//! Internet checksum arithmetic: full computation (RFC 1071) for tests and
//! userspace, incremental update (RFC 1624 eqn. 3) for the XDP program, and
//! the UDP rules: over IPv4 a transmitted zero means "no checksum" and must
//! stay zero, a computed zero is sent as `0xffff` (RFC 768); over IPv6 the
//! checksum is mandatory and a computed zero is also sent as `0xffff`
//! (RFC 8200 §8.1).
//!
//! Checksums are handled as the big-endian `u16` read from the wire. No
//! function here panics, allocates or loops over more than its fixed-size
//! inputs (the XDP verifier sees fully unrolled code).

/// Adds `data` to a one's complement accumulator as big-endian 16-bit words;
/// an odd trailing byte is padded with zero (RFC 1071 §4.1).
#[must_use]
pub fn sum_bytes(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

/// Folds a one's complement accumulator into 16 bits (end-around carry).
#[must_use]
pub const fn fold(mut acc: u64) -> u16 {
    // Four folds bring any u64 down to 16 bits.
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The Internet checksum of `data` (the complement of its one's complement
/// sum). For an IPv4 header, call it with the checksum field zeroed.
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_bytes(0, data))
}

/// Maps a computed UDP checksum of zero to `0xffff`, its one's complement
/// equivalent, because zero on the wire means "none" (RFC 768; RFC 8200 §8.1).
#[must_use]
pub const fn udp_nonzero(check: u16) -> u16 {
    if check == 0 { 0xffff } else { check }
}

/// The UDP checksum over IPv4 of `udp` (header and payload, checksum field
/// zeroed), with the pseudo-header of `src`, `dst` and `udp.len()`.
#[must_use]
pub fn udp4_checksum(src: [u8; 4], dst: [u8; 4], udp: &[u8]) -> u16 {
    let mut acc = sum_bytes(0, &src);
    acc = sum_bytes(acc, &dst);
    acc += 17 + udp.len() as u64;
    udp_nonzero(!fold(sum_bytes(acc, udp)))
}

/// The UDP checksum over IPv6 of `udp` (checksum field zeroed), with the
/// RFC 8200 §8.1 pseudo-header of `src`, `dst`, the length and next header.
#[must_use]
pub fn udp6_checksum(src: [u8; 16], dst: [u8; 16], udp: &[u8]) -> u16 {
    let mut acc = sum_bytes(0, &src);
    acc = sum_bytes(acc, &dst);
    acc += 17 + udp.len() as u64;
    udp_nonzero(!fold(sum_bytes(acc, udp)))
}

/// RFC 1624 eqn. 3: the checksum `check` of a region after the even-length
/// field `old` in it became `new`: `HC' = ~(~HC + ~m + m')`.
///
/// Chain calls for several fields. For UDP apply [`udp_nonzero`] to the final
/// result, and over IPv4 leave a zero `check` alone (no checksum).
#[must_use]
#[inline(always)] // the XDP program has no use for a call per field
pub fn replace<const N: usize>(check: u16, old: &[u8; N], new: &[u8; N]) -> u16 {
    const { assert!(N.is_multiple_of(2), "replace works on whole 16-bit words") };
    let mut acc = u64::from(!check);
    let mut i = 0;
    while i + 1 < N {
        acc += u64::from(!u16::from_be_bytes([old[i], old[i + 1]]));
        acc += u64::from(u16::from_be_bytes([new[i], new[i + 1]]));
        i += 2;
    }
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The example header of RFC 1071 §3 style: a real IPv4 header whose
    /// checksum is known (Wikipedia's worked example, checksum 0xb861).
    const IPV4_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn known_ipv4_header_checksum() {
        assert_eq!(checksum(&IPV4_HEADER), 0xb861);
        let mut h = IPV4_HEADER;
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        // A header with its checksum in place sums to all ones.
        assert_eq!(fold(sum_bytes(0, &h)), 0xffff);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum_bytes(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn udp_zero_result_is_sent_as_all_ones() {
        // Find a payload word that makes the sum all ones: the computed
        // checksum is 0 and must go out as 0xffff.
        let src = [192, 0, 2, 1];
        let dst = [198, 51, 100, 2];
        let mut udp = [0u8; 10];
        udp[4..6].copy_from_slice(&10u16.to_be_bytes());
        let partial = fold(sum_bytes(sum_bytes(17 + 10, &src), &dst) + sum_bytes(0, &udp));
        udp[8..10].copy_from_slice(&(!partial).to_be_bytes());
        assert_eq!(udp4_checksum(src, dst, &udp), 0xffff);
    }

    fn ipv4_with_checksum(h: &mut [u8; 20]) {
        h[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }

    proptest! {
        #[test]
        fn incremental_ipv4_header_matches_recomputation(
            mut h in any::<[u8; 20]>(),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            ttl in any::<u8>(),
        ) {
            ipv4_with_checksum(&mut h);
            let check = u16::from_be_bytes([h[10], h[11]]);
            let old_src: [u8; 4] = [h[12], h[13], h[14], h[15]];
            let old_dst: [u8; 4] = [h[16], h[17], h[18], h[19]];
            let old_ttl = [h[8], h[9]];
            let mut c = replace(check, &old_src, &src);
            c = replace(c, &old_dst, &dst);
            c = replace(c, &old_ttl, &[ttl, h[9]]);
            h[12..16].copy_from_slice(&src);
            h[16..20].copy_from_slice(&dst);
            h[8] = ttl;
            ipv4_with_checksum(&mut h);
            // Eqn. 3 gives exactly the recomputed value, except that it may
            // produce the other zero (0x0000 vs 0xffff) when the header sums
            // to zero, which no real header does (version 4 is nonzero).
            let fresh = u16::from_be_bytes([h[10], h[11]]);
            prop_assert!(c == fresh || (c | fresh == 0xffff && c & fresh == 0), "{c:#x} vs {fresh:#x}");
        }

        #[test]
        fn incremental_udp4_matches_recomputation(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            old in any::<([u8; 4], [u8; 4], [u8; 2], [u8; 2])>(),
            new in any::<([u8; 4], [u8; 4], [u8; 2], [u8; 2])>(),
        ) {
            let mut udp = [&old.2[..], &old.3, &[0, 0, 0, 0], &payload].concat();
            let len = udp.len() as u16;
            udp[4..6].copy_from_slice(&len.to_be_bytes());
            let check = udp4_checksum(old.0, old.1, &udp);
            let mut c = replace(check, &old.0, &new.0);
            c = replace(c, &old.1, &new.1);
            c = replace(c, &old.2, &new.2);
            c = udp_nonzero(replace(c, &old.3, &new.3));
            udp[0..2].copy_from_slice(&new.2);
            udp[2..4].copy_from_slice(&new.3);
            prop_assert_eq!(c, udp4_checksum(new.0, new.1, &udp));
            prop_assert_ne!(c, 0);
        }

        #[test]
        fn incremental_udp6_matches_recomputation(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            old in any::<([u8; 16], [u8; 16], [u8; 2], [u8; 2])>(),
            new in any::<([u8; 16], [u8; 16], [u8; 2], [u8; 2])>(),
        ) {
            let mut udp = [&old.2[..], &old.3, &[0, 0, 0, 0], &payload].concat();
            let len = udp.len() as u16;
            udp[4..6].copy_from_slice(&len.to_be_bytes());
            let check = udp6_checksum(old.0, old.1, &udp);
            let mut c = replace(check, &old.0, &new.0);
            c = replace(c, &old.1, &new.1);
            c = replace(c, &old.2, &new.2);
            c = udp_nonzero(replace(c, &old.3, &new.3));
            udp[0..2].copy_from_slice(&new.2);
            udp[2..4].copy_from_slice(&new.3);
            prop_assert_eq!(c, udp6_checksum(new.0, new.1, &udp));
        }

        #[test]
        fn checksummed_data_verifies(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut even = data.clone();
            if even.len() % 2 == 1 { even.push(0); }
            let c = checksum(&even);
            even.extend_from_slice(&c.to_be_bytes());
            prop_assert_eq!(fold(sum_bytes(0, &even)), 0xffff);
        }
    }
}
