//! Kamailio (Debian's `kamailio` 5.6) as a record-routing stateful proxy in
//! a lab's network, and SIPp scenarios made to run behind one.
//!
//! Owns: a minimal `kamailio.cfg` per instance written into the lab's
//! directory (modules Debian's package ships: tm, sl, rr, maxfwd,
//! siputils, textops, pv), starting Kamailio in the foreground inside the
//! lab's network ([`Net::command`]), and stopping its whole process group
//! (Kamailio forks its workers even with `-DD`) on drop. Also
//! [`record_routed_scenario`]: a shipped scenario with the route set SIPp
//! must use behind a record-routing proxy.
//!
//! May not: listen anywhere but the address it is given (one `listen=`
//! line; never the package's own `/etc/kamailio` configuration or its
//! system service), or outlive the test (SIGTERM to the group, SIGKILL
//! after 300 ms, on drop).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::lab::Net;
use crate::netns::Background;

/// Where Debian's package puts the modules.
pub const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/";

/// The configuration of one record-routing proxy on `listen`: every new
/// request is record-routed and relayed statefully to `next`; requests in a
/// dialog follow their Route set (`loose_route`); `server` is the product
/// string of what it sends itself (so a topology scan can tell two proxies
/// apart).
pub fn config(listen: SocketAddr, next: SocketAddr, server: &str) -> String {
    format!(
        "#!KAMAILIO\n\
         # Written by tests::kamailio: a record-routing stateful proxy.\n\
         debug=2\nlog_stderror=yes\nchildren=1\ntcp_children=1\n\
         listen=udp:{listen}\n\
         server_header=\"Server: {server}\"\nuser_agent_header=\"User-Agent: {server}\"\n\
         mpath=\"{MODULES}\"\n\
         loadmodule \"tm.so\"\nloadmodule \"sl.so\"\nloadmodule \"rr.so\"\n\
         loadmodule \"pv.so\"\nloadmodule \"maxfwd.so\"\nloadmodule \"siputils.so\"\n\
         loadmodule \"textops.so\"\n\
         request_route {{\n\
         \x20 if (!mf_process_maxfwd_header(\"10\")) {{ sl_send_reply(\"483\", \"Too Many Hops\"); exit; }}\n\
         \x20 if (has_totag()) {{\n\
         \x20   if (loose_route()) {{ t_relay(); exit; }}\n\
         \x20   if (is_method(\"ACK\")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}\n\
         \x20   sl_send_reply(\"404\", \"Not here\"); exit;\n\
         \x20 }}\n\
         \x20 if (is_method(\"CANCEL\")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}\n\
         \x20 record_route();\n\
         \x20 $du = \"sip:{next}\";\n\
         \x20 t_relay();\n\
         }}\n"
    )
}

/// Kamailio as the operators' usual rtpengine proxy, the one configuration
/// both the ng end-to-end test and the side-by-side bench against
/// rtpengine run: on `listen` with `children` UDP workers, it anchors every
/// call's media on the ng server at `ng` (its `rtpengine` module): offer on
/// the INVITE (caller in the relay's `outside` direction, callee
/// `inside`), answer on the reply, query (printed as an `ngstat` log line)
/// and delete on the BYE. Every new call goes to `callee`. No
/// record-routing: SIPp's built-in caller sends every request to the proxy,
/// which sends in-dialog ones on to the callee.
pub fn rtpengine_proxy_config(
    listen: SocketAddr,
    children: u32,
    ng: SocketAddr,
    callee: SocketAddr,
) -> String {
    format!(
        "#!KAMAILIO\n\
         # Written by tests::kamailio: a proxy anchoring media over rtpengine's ng protocol.\n\
         debug=2\nlog_stderror=yes\nchildren={children}\ntcp_children=1\n\
         listen=udp:{listen}\n\
         mpath=\"{MODULES}\"\n\
         loadmodule \"tm.so\"\nloadmodule \"sl.so\"\nloadmodule \"rr.so\"\n\
         loadmodule \"pv.so\"\nloadmodule \"maxfwd.so\"\nloadmodule \"siputils.so\"\n\
         loadmodule \"textops.so\"\nloadmodule \"xlog.so\"\nloadmodule \"rtpengine.so\"\n\
         modparam(\"rtpengine\", \"rtpengine_sock\", \"udp:{ng}\")\n\
         request_route {{\n\
         \x20 if (has_totag()) {{\n\
         \x20   if (!loose_route()) {{ $du = \"sip:{callee}\"; }}\n\
         \x20   if (is_method(\"BYE\")) {{\n\
         \x20     rtpengine_query();\n\
         \x20     xlog(\"L_INFO\", \"ngstat $rtpstat\\n\");\n\
         \x20     rtpengine_delete();\n\
         \x20   }}\n\
         \x20   t_relay(); exit;\n\
         \x20 }}\n\
         \x20 if (is_method(\"CANCEL\")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}\n\
         \x20 if (has_body(\"application/sdp\")) {{\n\
         \x20   rtpengine_offer(\"direction=outside direction=inside replace-origin replace-session-connection ICE=remove trust-address symmetric\");\n\
         \x20 }}\n\
         \x20 t_on_reply(\"R\");\n\
         \x20 $du = \"sip:{callee}\";\n\
         \x20 t_relay();\n\
         }}\n\
         onreply_route[R] {{\n\
         \x20 if (has_body(\"application/sdp\")) {{ rtpengine_answer(\"replace-origin ICE=remove trust-address\"); }}\n\
         }}\n"
    )
}

/// Kamailio's shared and per-process (package) memory, in MiB (`-m`, `-M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Shared memory: transactions and module state of every worker.
    pub shm_mb: u32,
    /// Private memory of each worker.
    pub pkg_mb: u32,
}

/// A running Kamailio, stopped with its whole process group on drop.
#[derive(Debug)]
pub struct Kamailio {
    leader: Option<Background>,
    dir: PathBuf,
    listen: SocketAddr,
}

impl Kamailio {
    /// Starts Kamailio in `net` on `listen`, relaying new requests to
    /// `next`, with its configuration, runtime files and log in a
    /// directory of its own under `dir`. Waits (at most 5 s) until its UDP
    /// listener is made; panics with its log otherwise.
    pub fn start(
        net: &Net,
        dir: &Path,
        listen: SocketAddr,
        next: SocketAddr,
        server: &str,
    ) -> Kamailio {
        Kamailio::start_with(
            net,
            dir,
            listen,
            &config(listen, next, server),
            Memory {
                shm_mb: 32,
                pkg_mb: 4,
            },
        )
    }

    /// Starts Kamailio in `net` with the configuration `cfg` (which must
    /// listen on `listen` only), as [`start`](Self::start) does; for a
    /// caller that writes its own configuration (the signaling comparison
    /// bench's proxy and topology-hiding configurations).
    pub fn start_with(
        net: &Net,
        dir: &Path,
        listen: SocketAddr,
        cfg: &str,
        memory: Memory,
    ) -> Kamailio {
        let run = dir.join(format!(
            "kamailio-{}",
            listen.to_string().replace([':', '.'], "-")
        ));
        fs::create_dir_all(&run).unwrap_or_else(|e| panic!("create {}: {e}", run.display()));
        let cfg_path = run.join("kamailio.cfg");
        fs::write(&cfg_path, cfg).unwrap_or_else(|e| panic!("write {}: {e}", cfg_path.display()));
        let log_path = run.join("kamailio.log");
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let mut cmd = net.command("kamailio");
        // A process group of its own: the workers it forks go with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.arg("-f")
            .arg(&cfg_path)
            .args(["-DD", "-E", "-m", &memory.shm_mb.to_string()])
            .args(["-M", &memory.pkg_mb.to_string(), "-Y"])
            .arg(&run)
            .arg("-P")
            .arg(run.join("kamailio.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let kamailio = Kamailio {
            leader: Some(Background::spawn(&mut cmd)),
            dir: run,
            listen,
        };
        kamailio.wait_ready();
        kamailio
    }

    fn wait_ready(&self) {
        let deadline = crate::netns::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            // Logged once the UDP listener's socket is made; the workers
            // are forked right after.
            if log.contains("SO_RCVBUF is finally") {
                std::thread::sleep(Duration::from_millis(300));
                return;
            }
            assert!(
                !log.contains("ERROR") && crate::netns::now() < deadline,
                "kamailio on {} did not start within 5 s (config {}):\n{log}",
                self.listen,
                self.dir.join("kamailio.cfg").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kamailio's log so far.
    pub fn log(&self) -> String {
        fs::read(self.dir.join("kamailio.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Where it listens.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The process id of its main process, which leads the process group
    /// of every worker it forked (`nsenter` execs it without forking).
    pub fn pid(&self) -> u32 {
        self.leader.as_ref().map_or(0, Background::id)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Some(leader) = self.leader.take() {
            let group = format!("-{}", leader.id());
            let signal = |sig: &str| {
                let _ = Command::new("kill")
                    .args([sig, "--", &group])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            };
            signal("-TERM");
            std::thread::sleep(Duration::from_millis(300));
            signal("-KILL");
            // Reaps the leader; its workers died with the group.
            drop(leader);
        }
    }
}

/// A shipped scenario (`tests/scenarios/<name>`) as it must run behind a
/// record-routing proxy, written to `dir` (see [`with_route_set`]).
pub fn record_routed_scenario(name: &str, dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    let text =
        fs::read_to_string(&shipped).unwrap_or_else(|e| panic!("read {}: {e}", shipped.display()));
    let path = dir.join(format!("record-routed-{name}"));
    fs::write(&path, with_route_set(&text))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A scenario's text with the route set of RFC 3261 §12.1.1: its answers to
/// the initial INVITE (before it receives an ACK) echo the INVITE's
/// Record-Route (`[last_Record-Route:]` after `[last_CSeq:]`), and every
/// request it sends to `[next_url]` carries `[routes]`. SIPp writes an
/// empty line for either keyword when there is nothing to put there, which
/// is why the shipped scenarios, played without a proxy, do not have them.
pub fn with_route_set(scenario: &str) -> String {
    let first_ack = scenario
        .find("<recv request=\"ACK\"")
        .unwrap_or(scenario.len());
    let (setup, rest) = scenario.split_at(first_ack);
    let setup = setup.replace(
        "[last_CSeq:]\n",
        "[last_CSeq:]\n      [last_Record-Route:]\n",
    );
    let mut out = String::new();
    for line in format!("{setup}{rest}").lines() {
        out.push_str(line);
        out.push('\n');
        let trimmed = line.trim_start();
        if trimmed.ends_with("[next_url] SIP/2.0") {
            out.push_str(&line[..line.len() - trimmed.len()]);
            out.push_str("[routes]\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rtpengine_proxy_anchors_offer_answer_and_deletes_on_bye() {
        let c = rtpengine_proxy_config(
            "127.0.30.4:5060".parse().expect("addr"),
            4,
            "127.0.30.1:2223".parse().expect("addr"),
            "127.0.30.3:5060".parse().expect("addr"),
        );
        for part in [
            "listen=udp:127.0.30.4:5060\n",
            "children=4\n",
            "modparam(\"rtpengine\", \"rtpengine_sock\", \"udp:127.0.30.1:2223\")",
            "rtpengine_offer(\"direction=outside direction=inside ",
            "rtpengine_answer(",
            "rtpengine_query();",
            "rtpengine_delete();",
            "$du = \"sip:127.0.30.3:5060\";",
        ] {
            assert!(c.contains(part), "{part} missing from\n{c}");
        }
        // The query must come before the delete, or it finds no session.
        assert!(
            c.find("rtpengine_query").expect("query") < c.find("rtpengine_delete").expect("delete")
        );
    }

    #[test]
    fn config_record_routes_and_relays_to_the_next_hop() {
        let c = config(
            "127.0.30.4:5060".parse().expect("addr"),
            "127.0.30.1:5060".parse().expect("addr"),
            "front-proxy",
        );
        for part in [
            "listen=udp:127.0.30.4:5060\n",
            "record_route();",
            "if (loose_route()) { t_relay(); exit; }",
            "$du = \"sip:127.0.30.1:5060\";",
            "server_header=\"Server: front-proxy\"",
        ] {
            assert!(c.contains(part), "{part} missing from\n{c}");
        }
    }

    #[test]
    fn route_set_keywords_go_where_sipp_needs_them() {
        let scenario = "<recv request=\"INVITE\"/>\n<send><![CDATA[\n      SIP/2.0 200 OK\n      [last_CSeq:]\n]]></send>\n\
                        <recv request=\"ACK\"/>\n<send><![CDATA[\n      BYE [next_url] SIP/2.0\n      [last_CSeq:]\n]]></send>\n";
        let out = with_route_set(scenario);
        assert!(
            out.contains(
                "[last_CSeq:]\n      [last_Record-Route:]\n]]></send>\n<recv request=\"ACK\""
            ),
            "{out}"
        );
        assert!(
            out.contains("      BYE [next_url] SIP/2.0\n      [routes]\n      [last_CSeq:]\n]]>"),
            "{out}"
        );
    }
}
