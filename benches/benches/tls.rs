//! What SIP over TLS costs the SBC, without sockets: a full handshake
//! (TLS 1.3 and 1.2, ECDSA P-256 certificates, the `ring` provider) with the
//! server configuration the SBC builds from its files (`sbc::tls`), and
//! the record layer's cost for one SIP message (seal on one side, open on
//! the other) next to the SIP parse the SBC does on it anyway.
//!
//! `cargo bench -p benches --bench tls`. The handshake time counts both
//! ends (client and server run in the same thread), so the SBC's own share
//! is lower: 1 / the time is a floor on handshakes per second per core.
//! A call over TLS costs its share of a handshake (none when the
//! connection is reused, as trunks do) plus about seven messages' record
//! cost (INVITE, 100, 180, 200, ACK, BYE, 200), which UDP does not pay.
//!
//! Measured on the 2-core CI machine (full handshakes, no resumption):
//! TLS 1.3 268 µs, TLS 1.2 244 µs (over 3,700 handshakes/s per core);
//! sealing and opening a 1 KB INVITE 0.72 µs against 1.83 µs to parse it,
//! so a reused TLS connection adds about 5 µs of CPU to a call.

use std::hint::black_box;
use std::sync::Arc;

use benches::CARRIER_INVITE;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use sbc::tls::{CaSet, Identity};

/// The SBC's server configuration and a client that trusts it, from
/// certificates made for the run.
fn configs() -> (Arc<ServerConfig>, RootCertStore, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sbc-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let ca = tests::pki::Ca::new(&dir, "Bench");
    let sbc = ca.issue("sbc", &["sbc.bench"]);
    #[allow(clippy::disallowed_methods)] // loading reads the clock, as the daemon does
    let now = std::time::SystemTime::now();
    let identity = Identity::load(&sbc.certificate, &sbc.private_key, now, true)
        .unwrap_or_else(|(_, e)| panic!("identity: {e}"));
    let server = sbc::tls::server_config(&identity, None, false).expect("server config");
    let _ = CaSet::load(&ca.path, now).expect("CA set");
    let mut roots = RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&ca.path).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("trust anchor");
    }
    (server, roots, dir)
}

/// A client of one protocol version that never resumes: every handshake
/// in the bench is a full one (signature, key exchange, chain check).
fn client(
    roots: &RootCertStore,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .expect("version")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// Moves every pending TLS byte from one side to the other until both are
/// quiet.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut buf = Vec::with_capacity(8192);
    loop {
        let mut moved = false;
        while client.wants_write() {
            buf.clear();
            client.write_tls(&mut buf).expect("client writes");
            server.read_tls(&mut buf.as_slice()).expect("server reads");
            server.process_new_packets().expect("server processes");
            moved = true;
        }
        while server.wants_write() {
            buf.clear();
            server.write_tls(&mut buf).expect("server writes");
            client.read_tls(&mut buf.as_slice()).expect("client reads");
            client.process_new_packets().expect("client processes");
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fn connected(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> (ClientConnection, ServerConnection) {
    let name = ServerName::try_from("sbc.bench").expect("name");
    let mut c = ClientConnection::new(Arc::clone(client), name).expect("client");
    let mut s = ServerConnection::new(Arc::clone(server)).expect("server");
    pump(&mut c, &mut s);
    assert!(!c.is_handshaking() && !s.is_handshaking());
    (c, s)
}

fn tls(c: &mut Criterion) {
    let (server, roots, dir) = configs();
    let mut group = c.benchmark_group("tls_handshake");
    for (name, version) in [
        ("tls13_ecdsa_p256", &rustls::version::TLS13),
        ("tls12_ecdsa_p256", &rustls::version::TLS12),
    ] {
        let client = client(&roots, version);
        group.bench_function(name, |b| b.iter(|| black_box(connected(&server, &client))));
    }
    group.finish();

    // One SIP message through an established connection: sealed by the
    // sender, opened by the SBC; the parse beside it for scale.
    let (mut c_conn, mut s_conn) = connected(&server, &client(&roots, &rustls::version::TLS13));
    let mut group = c.benchmark_group("tls_record");
    group.throughput(Throughput::Bytes(CARRIER_INVITE.len() as u64));
    let mut wire = Vec::with_capacity(4096);
    let mut plain = vec![0u8; 4096];
    group.bench_function("invite_seal_open", |b| {
        b.iter(|| {
            use std::io::{Read, Write};
            c_conn.writer().write_all(CARRIER_INVITE).expect("write");
            wire.clear();
            while c_conn.wants_write() {
                c_conn.write_tls(&mut wire).expect("seal");
            }
            s_conn.read_tls(&mut wire.as_slice()).expect("read");
            s_conn.process_new_packets().expect("open");
            let n = s_conn.reader().read(&mut plain).expect("plaintext");
            black_box(n)
        })
    });
    group.bench_function("invite_parse_for_scale", |b| {
        b.iter(|| sbc::sip::Message::parse(black_box(CARRIER_INVITE)))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, tls);
criterion_main!(benches);
