//! Per-trunk limits shared by the active nodes of a cluster.
//!
//! Every active node says, each renewal period, how many calls it has up
//! per trunk, in a hash `{name}:nodes:{node}` that expires after three
//! periods, and that it is alive, in the sorted set `{name}:nodes` (scored
//! by when its word expires). One Lua script ([`SHARE`]) writes both and
//! answers with the other live nodes' hashes. The core then counts the
//! others' calls against each trunk's `max_calls` and takes a 1/N share of
//! its `max_cps` ([`crate::b2bua::Core::set_cluster_load`]).
//!
//! The counts are a renewal period (plus the daemon's one-second tick)
//! old, so N nodes admitting at once may exceed `max_calls` by up to the
//! calls each admits in that time; a node that dies stops counting after
//! three periods. A node that can't reach Redis keeps the last counts it
//! had.

use std::collections::HashMap;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::sync::watch;

use super::Role;
use super::resp::{Redis, Reply};

/// Says this node's counts and that it is alive; answers the number of
/// live nodes and the others' counts. KEYS[1] = `{name}:nodes`; ARGV[1] =
/// this node, ARGV[2] = the Unix time in ms, ARGV[3] = how long the word
/// lasts (ms), then trunk and count pairs.
pub const SHARE: &str = "local now = tonumber(ARGV[2]) \
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1]) \
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) \
local key = KEYS[1] .. ':' .. ARGV[1] \
redis.call('DEL', key) \
if #ARGV > 3 then redis.call('HSET', key, unpack(ARGV, 4)) end \
redis.call('PEXPIRE', key, ARGV[3]) \
local nodes = redis.call('ZRANGE', KEYS[1], 0, -1) \
local out = {} \
for _, n in ipairs(nodes) do if n ~= ARGV[1] then \
table.insert(out, redis.call('HGETALL', KEYS[1] .. ':' .. n)) end end \
return {#nodes, out}";

/// What the other active nodes carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterLoad {
    /// Live active nodes, this one included (at least 1).
    pub nodes: u32,
    /// Their calls up, per trunk name (this node's not included).
    pub elsewhere: HashMap<String, u32>,
}

/// Reads [`SHARE`]'s answer.
pub fn parse(reply: &Reply) -> Option<ClusterLoad> {
    let Reply::Array(Some(parts)) = reply else {
        return None;
    };
    let [Reply::Integer(nodes), Reply::Array(Some(others))] = parts.as_slice() else {
        return None;
    };
    let mut elsewhere: HashMap<String, u32> = HashMap::new();
    for other in others {
        let Reply::Array(Some(fields)) = other else {
            continue;
        };
        for pair in fields.chunks(2) {
            let [Reply::Bulk(Some(trunk)), Reply::Bulk(Some(count))] = pair else {
                continue;
            };
            let (Ok(trunk), Some(count)) = (
                std::str::from_utf8(trunk),
                std::str::from_utf8(count)
                    .ok()
                    .and_then(|c| c.parse::<u32>().ok()),
            ) else {
                continue;
            };
            let sum = elsewhere.entry(trunk.to_owned()).or_default();
            *sum = sum.saturating_add(count);
        }
    }
    Some(ClusterLoad {
        nodes: u32::try_from((*nodes).max(1)).unwrap_or(u32::MAX),
        elsewhere,
    })
}

/// Who says its load, where, and how often.
#[derive(Clone, Debug)]
pub struct Sharing {
    /// `{name}:nodes`.
    pub key: String,
    /// This node's id.
    pub me: String,
    /// The renewal period.
    pub every: Duration,
}

/// While this node is active: every renewal period, says its counts
/// (`local`, from the daemon) and hands the others' to `load`.
pub async fn share_load(
    mut redis: Redis,
    Sharing { key, me, every }: Sharing,
    mut role: watch::Receiver<Role>,
    local: watch::Receiver<Vec<(String, u32)>>,
    load: watch::Sender<ClusterLoad>,
    errors: IntCounter,
) {
    let ttl = (every * 3).as_millis().to_string();
    loop {
        if role.wait_for(|r| *r == Role::Active).await.is_err() {
            return;
        }
        let unix_ms = super::clocks().1.to_string();
        let counts = local.borrow().clone();
        let mut args: Vec<&[u8]> = vec![
            b"EVAL",
            SHARE.as_bytes(),
            b"1",
            key.as_bytes(),
            me.as_bytes(),
            unix_ms.as_bytes(),
            ttl.as_bytes(),
        ];
        let numbers: Vec<String> = counts.iter().map(|(_, n)| n.to_string()).collect();
        for ((trunk, _), n) in counts.iter().zip(&numbers) {
            args.push(trunk.as_bytes());
            args.push(n.as_bytes());
        }
        match redis.command(&args).await.ok().as_ref().and_then(parse) {
            Some(answer) => {
                load.send_if_modified(|now| {
                    let changed = *now != answer;
                    *now = answer;
                    changed
                });
            }
            None => errors.inc(),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn the_others_counts_add_up_per_trunk() {
        let reply = Reply::Array(Some(vec![
            Reply::Integer(3),
            Reply::Array(Some(vec![
                Reply::Array(Some(vec![
                    bulk("pbx"),
                    bulk("4"),
                    bulk("carrier"),
                    bulk("1"),
                ])),
                Reply::Array(Some(vec![bulk("pbx"), bulk("2"), bulk("odd"), bulk("x")])),
                // A node whose hash expired between the two reads.
                Reply::Array(Some(vec![])),
            ])),
        ]));
        let load = parse(&reply).expect("parses");
        assert_eq!(load.nodes, 3);
        assert_eq!(load.elsewhere.get("pbx"), Some(&6));
        assert_eq!(load.elsewhere.get("carrier"), Some(&1));
        assert_eq!(load.elsewhere.get("odd"), None, "not a number");
        assert_eq!(parse(&Reply::Integer(1)), None);
        let alone = Reply::Array(Some(vec![Reply::Integer(1), Reply::Array(Some(vec![]))]));
        assert_eq!(
            parse(&alone),
            Some(ClusterLoad {
                nodes: 1,
                elsewhere: HashMap::new()
            })
        );
    }
}
