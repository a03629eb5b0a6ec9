//! Kamailio (Debian's `kamailio` 5.6) as the signaling comparison bench's
//! opponent, in two modes: a plain stateful proxy (`tm` + `rr`, hiding
//! nothing) and topology hiding with the `topos` module storing on Redis
//! (`topos_redis` over `ndb_redis`, Debian's `kamailio-redis-modules`).
//!
//! Owns: the configuration text of each mode ([`config`], pure and tested
//! here), starting Kamailio with it inside the bench's network namespace
//! (through [`tests::kamailio::Kamailio`], which stops its whole process
//! group on drop), and the Redis server topos stores to ([`Redis`], a child
//! process in the same namespace, no persistence, killed on drop).
//!
//! May not: use the packages' system services or their `/etc`
//! configurations (`scripts/test.sh` stops and disables both), listen
//! anywhere but the addresses it is given, or outlive the bench run.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use ::tests::kamailio::{Kamailio, MODULES, Memory};
use ::tests::lab::Net;
use ::tests::netns::Background;

use crate::siplab::now;

/// What Kamailio does to the calls it relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A record-routing stateful proxy: every header passes untouched.
    Proxy,
    /// The same proxy with the `topos` module: Via, Record-Route and
    /// Contact of each side are stored (on Redis) and replaced, so neither
    /// side sees the other's addresses, as our SBC's topology hiding does.
    ToposRedis,
}

impl Mode {
    /// The mode's name in the bench's tables.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Proxy => "kamailio proxy",
            Mode::ToposRedis => "kamailio topos+redis",
        }
    }
}

/// The shared and private memory Kamailio is given: the stateful proxy
/// keeps every transaction in shared memory until its wait timer (5 s)
/// ends, so 2,000 calls a second need far more than the default 64 MiB.
pub const MEMORY: Memory = Memory {
    shm_mb: 512,
    pkg_mb: 16,
};

/// The configuration of Kamailio in `mode`, listening on `listen` (UDP
/// only) with `children` worker processes, relaying a new request whose
/// Request-URI user is `targets[i].0` to `targets[i].1`. `redis` is where
/// topos stores (unused by [`Mode::Proxy`]).
///
/// In-dialog requests follow their Route set (`loose_route`). SIPp's
/// built-in `uac` ignores Record-Route and sends its ACK and BYE to the
/// proxy with its first Request-URI and no Route header, so such a request
/// is routed by its user as the INVITE was, instead of refused.
pub fn config(
    mode: Mode,
    listen: SocketAddr,
    children: u32,
    targets: &[(String, SocketAddr)],
    redis: SocketAddr,
) -> String {
    let mut t = String::new();
    let _ = write!(
        t,
        "#!KAMAILIO\n\
         # Written by benches::kamailio: {}.\n\
         debug=2\nlog_stderror=yes\nchildren={children}\ndisable_tcp=yes\n\
         listen=udp:{listen}\n\
         mpath=\"{MODULES}\"\n\
         loadmodule \"tm.so\"\nloadmodule \"sl.so\"\nloadmodule \"rr.so\"\n\
         loadmodule \"pv.so\"\nloadmodule \"maxfwd.so\"\nloadmodule \"siputils.so\"\n\
         loadmodule \"textops.so\"\n",
        match mode {
            Mode::Proxy => "a record-routing stateful proxy, no topology hiding",
            Mode::ToposRedis => "a record-routing stateful proxy with topos on Redis",
        }
    );
    if mode == Mode::ToposRedis {
        let _ = write!(
            t,
            "loadmodule \"ndb_redis.so\"\nloadmodule \"topos.so\"\n\
             loadmodule \"topos_redis.so\"\n\
             modparam(\"ndb_redis\", \"server\", \"name=tps;addr={};port={};db=0\")\n\
             modparam(\"topos\", \"storage\", \"redis\")\n\
             modparam(\"topos_redis\", \"serverid\", \"tps\")\n",
            redis.ip(),
            redis.port()
        );
    }
    t.push_str(
        "request_route {\n\
         \x20 if (!mf_process_maxfwd_header(\"10\")) { sl_send_reply(\"483\", \"Too Many Hops\"); exit; }\n\
         \x20 if (has_totag()) {\n\
         \x20   if (!loose_route()) { route(TARGET); }\n\
         \x20   t_relay();\n\
         \x20   exit;\n\
         \x20 }\n\
         \x20 if (is_method(\"CANCEL\")) { if (t_check_trans()) { t_relay(); } exit; }\n\
         \x20 record_route();\n\
         \x20 route(TARGET);\n\
         \x20 t_relay();\n\
         }\n\
         route[TARGET] {\n",
    );
    for (user, target) in targets {
        let _ = writeln!(
            t,
            "  if ($rU == \"{user}\") {{ $du = \"sip:{target}\"; return; }}"
        );
    }
    t.push_str("  sl_send_reply(\"404\", \"No route\");\n  exit;\n}\n");
    t
}

/// Starts Kamailio in `mode` inside `net` (see [`config`]); its files go
/// to a directory of its own under `dir`. Waits (bounded) until it listens.
pub fn start(
    net: &Net,
    dir: &Path,
    mode: Mode,
    listen: SocketAddr,
    children: u32,
    targets: &[(String, SocketAddr)],
    redis: SocketAddr,
) -> Kamailio {
    Kamailio::start_with(
        net,
        dir,
        listen,
        &config(mode, listen, children, targets, redis),
        MEMORY,
    )
}

/// A Redis server in the bench's namespace: no persistence, killed and
/// reaped on drop.
#[derive(Debug)]
pub struct Redis {
    server: Background,
    addr: SocketAddr,
}

impl Redis {
    /// Starts `redis-server` on `addr` inside `net` (working directory and
    /// log under `dir`) and waits, at most 5 s, until it answers PING.
    pub fn start(net: &Net, dir: &Path, addr: SocketAddr) -> Redis {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let log = dir.join("redis.log");
        let mut cmd = net.command("redis-server");
        cmd.args(["--bind", &addr.ip().to_string()])
            .args(["--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let redis = Redis {
            server: Background::spawn(&mut cmd),
            addr,
        };
        let deadline = now() + Duration::from_secs(5);
        while redis.cli(net, &["PING"]).as_deref() != Some("PONG") {
            assert!(
                now() < deadline,
                "redis-server on {addr} did not answer within 5 s:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    /// Runs `redis-cli` with `args` against this server (inside `net`);
    /// its trimmed output, or `None` if it could not run or failed.
    pub fn cli(&self, net: &Net, args: &[&str]) -> Option<String> {
        let out = net
            .command("redis-cli")
            .args(["-h", &self.addr.ip().to_string()])
            .args(["-p", &self.addr.port().to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The server's process id (`nsenter` execs it without forking).
    pub fn pid(&self) -> u32 {
        self.server.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Vec<(String, SocketAddr)> {
        vec![
            ("b0x".to_owned(), "127.70.0.10:5060".parse().expect("addr")),
            ("b1x".to_owned(), "127.70.0.11:5060".parse().expect("addr")),
        ]
    }

    #[test]
    fn the_proxy_record_routes_and_routes_on_the_user() {
        let c = config(
            Mode::Proxy,
            "127.70.0.1:5060".parse().expect("addr"),
            4,
            &targets(),
            "127.70.0.5:6379".parse().expect("addr"),
        );
        for part in [
            "listen=udp:127.70.0.1:5060\n",
            "children=4\n",
            "record_route();",
            "if (!loose_route()) { route(TARGET); }",
            "if ($rU == \"b0x\") { $du = \"sip:127.70.0.10:5060\"; return; }",
            "if ($rU == \"b1x\") { $du = \"sip:127.70.0.11:5060\"; return; }",
        ] {
            assert!(c.contains(part), "{part} missing from\n{c}");
        }
        assert!(!c.contains("topos"), "{c}");
        assert!(!c.contains("redis"), "{c}");
    }

    #[test]
    fn topos_stores_on_the_given_redis() {
        let c = config(
            Mode::ToposRedis,
            "127.70.0.1:5060".parse().expect("addr"),
            2,
            &targets(),
            "127.70.0.5:6379".parse().expect("addr"),
        );
        for part in [
            "loadmodule \"topos.so\"",
            "loadmodule \"topos_redis.so\"",
            "modparam(\"ndb_redis\", \"server\", \"name=tps;addr=127.70.0.5;port=6379;db=0\")",
            "modparam(\"topos\", \"storage\", \"redis\")",
            "modparam(\"topos_redis\", \"serverid\", \"tps\")",
            "record_route();",
        ] {
            assert!(c.contains(part), "{part} missing from\n{c}");
        }
        // ndb_redis must be loaded before the module that uses it.
        let ndb = c.find("ndb_redis.so").expect("ndb_redis");
        let topos = c.find("topos_redis.so").expect("topos_redis");
        assert!(ndb < topos, "{c}");
    }
}
