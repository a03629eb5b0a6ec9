//! Call detail records: what billing and fraud control need to know about
//! each finished call, written as one JSON object per line to a file.
//!
//! Owns: the record ([`CallRecord`]) and its JSON shape (a contract, below),
//! the wall-clock timestamp format, the join of an ended call with its
//! streams' final media counters ([`Ledger`], pure), and the writer
//! ([`CdrWriter`]): an IO shell that owns one thread and one file.
//!
//! May not: slow a call down. The call core hands a finished record to
//! [`CdrWriter::write`], which never blocks: records queue in a bounded
//! channel to the writer thread, and when the disk is too slow for the queue
//! to drain, further records are dropped and counted ([`CdrStats::dropped`]).
//! Nor may it bring the daemon down: a failed write, fsync or reopen is
//! counted and logged (the first, then every power of two, so a full disk does
//! not flood the log) and the writer carries on. Opening the file at start-up
//! is the one error handed back, so a misconfigured path stops the daemon
//! before it takes calls.
//!
//! # The record (`cdr_version` 1)
//!
//! One line per call, UTF-8 JSON, keys in this order, every key always
//! present (`null` where the call never got that far):
//!
//! | key | type | meaning |
//! | --- | --- | --- |
//! | `cdr_version` | int | 1; bumped when a key changes meaning or goes away (new keys may be added) |
//! | `start_time`, `start_unix_ms` | string, int | when the SBC received the INVITE: RFC 3339 UTC with milliseconds (`2026-11-21T14:07:12.345Z`) and Unix epoch milliseconds |
//! | `answer_time`, `answer_unix_ms` | string, int or null | when the 2xx answering the call arrived |
//! | `end_time`, `end_unix_ms` | string, int | when the call ended (BYE, CANCEL, final failure, or the SBC's teardown) |
//! | `setup_ms` | int or null | post-dial delay: INVITE to the first 18x or 2xx (as `sbc_call_setup_seconds`) |
//! | `duration_ms` | int | billable time, answer to end; 0 when unanswered |
//! | `from_user`, `from_host` | string or null | user part (as written, %-escapes kept) and host of the From URI the caller sent |
//! | `to_user`, `to_host` | string or null | the same for the To URI |
//! | `dialed` | string or null | the user part of the inbound Request-URI (the dialed number; for `tel:` the number) |
//! | `in_realm` | string | the realm the call arrived on |
//! | `in_trunk` | string or null | the trunk the call came from, when the source matched one |
//! | `in_call_id` | string | Call-ID of the inbound leg (the caller's) |
//! | `out_realm`, `out_trunk` | string or null | the realm and trunk of the last outbound attempt (the one that answered, or failed last) |
//! | `out_trunks_tried` | array of strings | every trunk tried, in order (failover); empty when nothing was sent |
//! | `out_call_id` | string or null | Call-ID of the (last) outbound leg, which the SBC generated |
//! | `outcome` | string | `answered`, `busy`, `no_answer`, `cancelled`, `rejected`, `failed` (as `sbc_calls_total`) |
//! | `sip_status`, `sip_reason` | int, string | the final response the caller received on the inbound leg |
//! | `hangup_by` | string | `caller`, `callee` or `sbc` |
//! | `hangup_reason` | string or null | why the SBC ended it (`media_timeout`, `shutdown`, `no_answer_timeout`, `transaction_timeout`, `transport_error`, or a refusal as in `sbc_rejected_total`: `acl`, `rate_limit`, `admission`, `no_route`, `invalid`, `media_ports`); null for `caller`/`callee` |
//! | `media_path` | string | `xdp` when the XDP fast path relayed more than half of the call's packets (the first packets of each flow always cross userspace, which latches them), else `userspace`; `none` when no media was anchored |
//! | `in_rx_packets`, `in_rx_bytes`, `in_tx_packets`, `in_tx_bytes` | int | media on the inbound leg: received from the caller, sent to the caller (UDP payload bytes) |
//! | `out_rx_packets`, `out_rx_bytes`, `out_tx_packets`, `out_tx_bytes` | int | the same on the outbound leg, toward the callee |
//! | `media_not_latched` | array of strings | the legs (`in`, `out`) whose media kept coming from a source the relay may not learn (after its learning window): that direction's audio was dropped; empty normally |
//!
//! Call-IDs, user parts and hosts are copied as received (non-UTF-8 bytes
//! replaced by U+FFFD); JSON escaping keeps a hostile value on its line.
//!
//! # Durability
//!
//! The file is opened with `O_APPEND` (created `0640`), so each record is one
//! `write(2)` at the end of the file whoever else appends. What survives a
//! power loss depends on [`FsyncPolicy`]: `every` syncs after each record
//! (nothing written is lost; one disk flush per call, which a busy SBC on a
//! spinning disk may not keep up with, so the queue fills and records are
//! dropped and counted instead); `{ interval_ms = N }` syncs at most every N
//! ms while records keep coming (up to N ms of records lost); `never` leaves it
//! to the kernel's writeback (typically up to 30 s lost). If the SBC process
//! dies, what is still queued is lost whatever the policy; [`CdrWriter::close`]
//! on shutdown drains the queue and syncs (except under `never`). A write that
//! fails half way leaves a torn line; the next record starts on a new line, so
//! readers skip just the line that does not parse.
//!
//! # Log rotation
//!
//! `logrotate` renames the file away and sends SIGHUP; the driver calls
//! [`CdrWriter::reopen`], and records written after it go to a new file at the
//! configured path. Records queued before the call still go to the old one.
//! If the new file cannot be opened the writer keeps the old one (and counts
//! the error) rather than losing records.
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::config::{self, FsyncPolicy};

mod ledger;
use crate::metrics::{CallOutcome, MediaPath, RejectReason};
use crate::sip::Message;
pub use ledger::{Finished, Ledger, hangup_of, outcome_of};

/// The `cdr_version` of records this module writes.
pub const CDR_VERSION: u32 = 1;

/// The permissions a new CDR file is created with (before the umask): the
/// SBC's user writes, its group (billing collectors) reads, nobody else.
pub const FILE_MODE: u32 = 0o640;

/// One finished call. Serializes to the flat JSON object documented in the
/// module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// When the INVITE was received.
    pub start: SystemTime,
    /// When the first 18x or 2xx was received (for `setup_ms`).
    pub progress: Option<SystemTime>,
    /// When the 2xx answering the call was received.
    pub answer: Option<SystemTime>,
    /// When the call ended.
    pub end: SystemTime,
    /// From, To, Request-URI user and Call-ID of the INVITE as received.
    pub parties: Parties,
    /// The realm the call arrived on.
    pub in_realm: String,
    /// The trunk the call came from, if its source matched one.
    pub in_trunk: Option<String>,
    /// The realm of the last outbound attempt.
    pub out_realm: Option<String>,
    /// Every trunk tried, in order; the last is the one used.
    pub out_trunks_tried: Vec<String>,
    /// Call-ID of the last outbound leg.
    pub out_call_id: Option<String>,
    /// How the call ended.
    pub outcome: CallOutcome,
    /// The final response the caller received.
    pub sip_status: u16,
    /// Its reason phrase.
    pub sip_reason: String,
    /// Who ended the call.
    pub hangup: Hangup,
    /// Which relay carried the media; `None` when no media was anchored.
    pub media_path: Option<MediaPath>,
    /// Media on the inbound (caller) leg.
    pub media_in: MediaCounts,
    /// Media on the outbound (callee) leg.
    pub media_out: MediaCounts,
    /// The legs (inbound, outbound) whose media source the relay never
    /// learned while their media kept coming.
    pub media_not_latched: [bool; 2],
}

/// What the caller's INVITE said about the call, taken as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parties {
    /// The From URI's user part (as written, %-escapes kept).
    pub from_user: Option<String>,
    /// The From URI's host (IPv6 in brackets).
    pub from_host: Option<String>,
    /// The To URI's user part.
    pub to_user: Option<String>,
    /// The To URI's host.
    pub to_host: Option<String>,
    /// The Request-URI's user part: the dialed number.
    pub dialed: Option<String>,
    /// The inbound leg's Call-ID.
    pub call_id: String,
}

impl Parties {
    /// Takes From, To, the Request-URI user and the Call-ID from the INVITE
    /// the caller sent. A header that is missing or does not parse leaves
    /// its fields `None` (the Call-ID empty); the parser has already refused
    /// INVITEs without them, so that only happens after a faulty edit.
    pub fn of_invite(invite: &Message) -> Parties {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (from_user, from_host) = invite.from().map_or((None, None), |f| {
            (
                f.uri().user().map(text),
                f.uri().host().map(|h| h.to_string()),
            )
        });
        let (to_user, to_host) = invite.to().map_or((None, None), |t| {
            (
                t.uri().user().map(text),
                t.uri().host().map(|h| h.to_string()),
            )
        });
        Parties {
            from_user,
            from_host,
            to_user,
            to_host,
            dialed: invite.request_uri().and_then(|u| u.user().map(text)),
            call_id: invite.call_id().map(text).unwrap_or_default(),
        }
    }
}

/// Who ended the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hangup {
    /// The caller: BYE, or CANCEL before the answer.
    Caller,
    /// The callee: BYE, or a final failure response.
    Callee,
    /// The SBC itself, for this reason.
    Sbc(SbcHangup),
}

/// Why the SBC ended or refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbcHangup {
    /// Media stopped flowing for longer than `media.inactivity_timeout_secs`.
    MediaTimeout,
    /// The SBC was shutting down.
    Shutdown,
    /// Nobody answered before the SBC's no-answer timer.
    NoAnswerTimeout,
    /// No final response before the INVITE transaction timed out.
    TransactionTimeout,
    /// The request could not be sent to any target.
    TransportError,
    /// The SBC refused the call itself.
    Refused(RejectReason),
}

impl SbcHangup {
    /// The `hangup_reason` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SbcHangup::MediaTimeout => "media_timeout",
            SbcHangup::Shutdown => "shutdown",
            SbcHangup::NoAnswerTimeout => "no_answer_timeout",
            SbcHangup::TransactionTimeout => "transaction_timeout",
            SbcHangup::TransportError => "transport_error",
            SbcHangup::Refused(reason) => reason.as_str(),
        }
    }
}

impl Hangup {
    /// The `hangup_by` value.
    pub const fn by(self) -> &'static str {
        match self {
            Hangup::Caller => "caller",
            Hangup::Callee => "callee",
            Hangup::Sbc(_) => "sbc",
        }
    }

    /// The `hangup_reason` value (`None` unless the SBC ended the call).
    pub const fn reason(self) -> Option<&'static str> {
        match self {
            Hangup::Sbc(reason) => Some(reason.as_str()),
            Hangup::Caller | Hangup::Callee => None,
        }
    }
}

/// Media counters of one leg, seen from the SBC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaCounts {
    /// Packets received from this leg's peer.
    pub rx_packets: u64,
    /// UDP payload bytes received from this leg's peer.
    pub rx_bytes: u64,
    /// Packets sent to this leg's peer.
    pub tx_packets: u64,
    /// UDP payload bytes sent to this leg's peer.
    pub tx_bytes: u64,
}

/// Milliseconds since the Unix epoch; 0 for a clock before 1970.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Formats Unix epoch milliseconds as RFC 3339 UTC with milliseconds,
/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339 §5.6).
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let days = unix_ms / 86_400_000;
    let ms_of_day = unix_ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The flat wire shape of a [`CallRecord`]; field order is the documented
/// key order.
#[derive(Serialize)]
struct Wire<'a> {
    cdr_version: u32,
    start_time: String,
    start_unix_ms: u64,
    answer_time: Option<String>,
    answer_unix_ms: Option<u64>,
    end_time: String,
    end_unix_ms: u64,
    setup_ms: Option<u64>,
    duration_ms: u64,
    from_user: Option<&'a str>,
    from_host: Option<&'a str>,
    to_user: Option<&'a str>,
    to_host: Option<&'a str>,
    dialed: Option<&'a str>,
    in_realm: &'a str,
    in_trunk: Option<&'a str>,
    in_call_id: &'a str,
    out_realm: Option<&'a str>,
    out_trunk: Option<&'a str>,
    out_trunks_tried: &'a [String],
    out_call_id: Option<&'a str>,
    outcome: &'static str,
    sip_status: u16,
    sip_reason: &'a str,
    hangup_by: &'static str,
    hangup_reason: Option<&'static str>,
    media_path: &'static str,
    in_rx_packets: u64,
    in_rx_bytes: u64,
    in_tx_packets: u64,
    in_tx_bytes: u64,
    out_rx_packets: u64,
    out_rx_bytes: u64,
    out_tx_packets: u64,
    out_tx_bytes: u64,
    media_not_latched: Vec<&'static str>,
}

impl Serialize for CallRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let start = unix_millis(self.start);
        let answer = self.answer.map(unix_millis);
        let end = unix_millis(self.end);
        let p = &self.parties;
        Wire {
            cdr_version: CDR_VERSION,
            start_time: rfc3339_millis(start),
            start_unix_ms: start,
            answer_time: answer.map(rfc3339_millis),
            answer_unix_ms: answer,
            end_time: rfc3339_millis(end),
            end_unix_ms: end,
            // A clock stepped backwards yields 0, never a negative span.
            setup_ms: self
                .progress
                .or(self.answer)
                .map(|t| unix_millis(t).saturating_sub(start)),
            duration_ms: answer.map_or(0, |a| end.saturating_sub(a)),
            from_user: p.from_user.as_deref(),
            from_host: p.from_host.as_deref(),
            to_user: p.to_user.as_deref(),
            to_host: p.to_host.as_deref(),
            dialed: p.dialed.as_deref(),
            in_realm: &self.in_realm,
            in_trunk: self.in_trunk.as_deref(),
            in_call_id: &p.call_id,
            out_realm: self.out_realm.as_deref(),
            out_trunk: self.out_trunks_tried.last().map(String::as_str),
            out_trunks_tried: &self.out_trunks_tried,
            out_call_id: self.out_call_id.as_deref(),
            outcome: self.outcome.as_str(),
            sip_status: self.sip_status,
            sip_reason: &self.sip_reason,
            hangup_by: self.hangup.by(),
            hangup_reason: self.hangup.reason(),
            media_path: self.media_path.map_or("none", MediaPath::as_str),
            in_rx_packets: self.media_in.rx_packets,
            in_rx_bytes: self.media_in.rx_bytes,
            in_tx_packets: self.media_in.tx_packets,
            in_tx_bytes: self.media_in.tx_bytes,
            out_rx_packets: self.media_out.rx_packets,
            out_rx_bytes: self.media_out.rx_bytes,
            out_tx_packets: self.media_out.tx_packets,
            out_tx_bytes: self.media_out.tx_bytes,
            media_not_latched: ["in", "out"]
                .into_iter()
                .zip(self.media_not_latched)
                .filter_map(|(leg, hit)| hit.then_some(leg))
                .collect(),
        }
        .serialize(serializer)
    }
}

impl CallRecord {
    /// The record as one JSON line, newline included.
    pub fn to_json_line(&self) -> Vec<u8> {
        // Serializing plain strings and numbers into a Vec cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Errors of the CDR writer that reach the caller.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    /// The CDR file could not be opened for appending at start-up.
    #[error(
        "cannot open the CDR file {path} for appending: {source} (check that the directory exists and the SBC's user may write to it)"
    )]
    Open {
        /// The configured path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the CDR writer thread: {0}")]
    Spawn(io::Error),
}

/// What the writer has done so far; every field only grows.
#[derive(Debug, Default)]
pub struct CdrStats {
    /// Records written whole.
    pub written: AtomicU64,
    /// Records dropped because the queue was full (the disk too slow).
    pub dropped: AtomicU64,
    /// Records lost to a failed write.
    pub write_errors: AtomicU64,
    /// fsync calls that succeeded.
    pub syncs: AtomicU64,
    /// fsync calls that failed.
    pub sync_errors: AtomicU64,
    /// Reopens that succeeded.
    pub reopens: AtomicU64,
    /// Reopens that failed (the old file stays in use).
    pub reopen_errors: AtomicU64,
}

/// A plain copy of [`CdrStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CdrCounts {
    /// See [`CdrStats::written`].
    pub written: u64,
    /// See [`CdrStats::dropped`].
    pub dropped: u64,
    /// See [`CdrStats::write_errors`].
    pub write_errors: u64,
    /// See [`CdrStats::syncs`].
    pub syncs: u64,
    /// See [`CdrStats::sync_errors`].
    pub sync_errors: u64,
    /// See [`CdrStats::reopens`].
    pub reopens: u64,
    /// See [`CdrStats::reopen_errors`].
    pub reopen_errors: u64,
}

impl CdrStats {
    /// A snapshot of the counters.
    pub fn counts(&self) -> CdrCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CdrCounts {
            written: get(&self.written),
            dropped: get(&self.dropped),
            write_errors: get(&self.write_errors),
            syncs: get(&self.syncs),
            sync_errors: get(&self.sync_errors),
            reopens: get(&self.reopens),
            reopen_errors: get(&self.reopen_errors),
        }
    }
}

/// Adds one to `counter` and says whether this occurrence should be logged:
/// the first and then every power of two.
fn bump(counter: &AtomicU64) -> bool {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    n.is_power_of_two()
}

enum Command {
    Record(Box<CallRecord>),
    Reopen,
}

/// Appends [`CallRecord`]s to a file from its own thread. See the module
/// docs for the queueing, durability and rotation rules. Dropped without
/// [`close`](CdrWriter::close), the thread still drains the queue, but
/// nobody waits for it.
pub struct CdrWriter {
    tx: SyncSender<Command>,
    stats: Arc<CdrStats>,
    /// Set when a reopen could not be queued; the thread reopens before its
    /// next record.
    reopen_pending: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl CdrWriter {
    /// Opens (creating if missing) `path` for appending and starts the
    /// writer thread with a queue of `queue_records`.
    pub fn open(
        path: &Path,
        fsync: FsyncPolicy,
        queue_records: usize,
    ) -> Result<CdrWriter, CdrError> {
        let file = open_append(path).map_err(|source| CdrError::Open {
            path: path.to_owned(),
            source,
        })?;
        let (tx, rx) = sync_channel(queue_records.max(1));
        let stats = Arc::new(CdrStats::default());
        let reopen_pending = Arc::new(AtomicBool::new(false));
        let thread = Thread {
            path: path.to_owned(),
            file,
            fsync,
            stats: Arc::clone(&stats),
            reopen_pending: Arc::clone(&reopen_pending),
            dirty: false,
            torn: false,
            last_sync: None,
        };
        let thread = std::thread::Builder::new()
            .name("sbc-cdr".into())
            .spawn(move || thread.run(&rx))
            .map_err(CdrError::Spawn)?;
        Ok(CdrWriter {
            tx,
            stats,
            reopen_pending,
            thread,
        })
    }

    /// The writer `[cdr]` asks for, or `None` when CDRs are off (no path).
    pub fn from_config(config: &config::Cdr) -> Result<Option<CdrWriter>, CdrError> {
        let Some(path) = &config.path else {
            return Ok(None);
        };
        let queue = usize::try_from(config.queue_records).unwrap_or(usize::MAX);
        CdrWriter::open(path, config.fsync, queue).map(Some)
    }

    /// Queues one record; never blocks. A full queue drops the record and
    /// counts it in [`CdrStats::dropped`].
    pub fn write(&self, record: CallRecord) {
        match self.tx.try_send(Command::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                if bump(&self.stats.dropped) {
                    tracing::warn!(
                        dropped = self.stats.dropped.load(Ordering::Relaxed),
                        "CDR queue full (the disk is slower than the call rate): call records dropped"
                    );
                }
            }
        }
    }

    /// Asks the writer to reopen its file at the configured path (after log
    /// rotation renamed it away); never blocks. Records queued before this
    /// call go to the old file.
    pub fn reopen(&self) {
        if self.tx.try_send(Command::Reopen).is_err() {
            // Queue full: the thread looks at the flag before each record.
            self.reopen_pending.store(true, Ordering::Relaxed);
        }
    }

    /// The writer's counters, shared with its thread.
    pub fn stats(&self) -> &Arc<CdrStats> {
        &self.stats
    }

    /// Writes everything still queued, syncs (unless the policy is `never`),
    /// stops the thread and returns the final counts. Blocks until the disk
    /// has taken the queue: call it on shutdown, not from the call core.
    pub fn close(self) -> CdrCounts {
        let CdrWriter {
            tx, stats, thread, ..
        } = self;
        drop(tx);
        if thread.join().is_err() {
            tracing::error!("the CDR writer thread panicked; queued records are lost");
        }
        stats.counts()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

/// The writer thread's state.
struct Thread {
    path: PathBuf,
    file: File,
    fsync: FsyncPolicy,
    stats: Arc<CdrStats>,
    reopen_pending: Arc<AtomicBool>,
    /// Written since the last fsync.
    dirty: bool,
    /// The last write stopped part way through a line.
    torn: bool,
    last_sync: Option<Instant>,
}

impl Thread {
    fn run(mut self, rx: &Receiver<Command>) {
        loop {
            let command = match self.sync_deadline() {
                None => match rx.recv() {
                    Ok(c) => c,
                    Err(_) => break,
                },
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(now());
                    match rx.recv_timeout(wait) {
                        Ok(c) => c,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            if self.reopen_pending.swap(false, Ordering::Relaxed) {
                self.reopen();
            }
            match command {
                Command::Record(record) => self.append(&record),
                Command::Reopen => self.reopen(),
            }
        }
        if self.dirty && self.fsync != FsyncPolicy::Never {
            self.sync();
        }
    }

    /// When the pending interval sync is due; `None` when nothing waits for
    /// one.
    fn sync_deadline(&self) -> Option<Instant> {
        match self.fsync {
            FsyncPolicy::IntervalMs(ms) if self.dirty => {
                let interval = Duration::from_millis(u64::from(ms));
                Some(self.last_sync.map_or_else(now, |t| t + interval))
            }
            _ => None,
        }
    }

    fn append(&mut self, record: &CallRecord) {
        let mut line = Vec::with_capacity(1024);
        if self.torn {
            line.push(b'\n');
        }
        line.extend_from_slice(&record.to_json_line());
        let mut done = 0;
        while done < line.len() {
            match self.file.write(&line[done..]) {
                Ok(0) => {
                    self.write_failed(done, &io::Error::from(io::ErrorKind::WriteZero));
                    return;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.write_failed(done, &e);
                    return;
                }
            }
        }
        self.torn = false;
        self.dirty = true;
        self.stats.written.fetch_add(1, Ordering::Relaxed);
        match self.fsync {
            FsyncPolicy::Every => self.sync(),
            FsyncPolicy::IntervalMs(_) => {
                if self.sync_deadline().is_some_and(|d| d <= now()) {
                    self.sync();
                }
            }
            FsyncPolicy::Never => {}
        }
    }

    fn write_failed(&mut self, done: usize, error: &io::Error) {
        self.torn |= done > 0;
        if bump(&self.stats.write_errors) {
            tracing::error!(
                path = %self.path.display(),
                errors = self.stats.write_errors.load(Ordering::Relaxed),
                %error,
                "writing a call record failed; the record is lost"
            );
        }
    }

    fn sync(&mut self) {
        self.last_sync = Some(now());
        self.dirty = false;
        match self.file.sync_data() {
            Ok(()) => {
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                if bump(&self.stats.sync_errors) {
                    tracing::error!(
                        path = %self.path.display(),
                        %error,
                        "fsync of the CDR file failed; recent records may not survive a power loss"
                    );
                }
            }
        }
    }

    fn reopen(&mut self) {
        match open_append(&self.path) {
            Ok(file) => {
                // What went to the old file is made durable before leaving it.
                if self.dirty && self.fsync != FsyncPolicy::Never {
                    self.sync();
                }
                self.file = file;
                self.torn = false;
                self.dirty = false;
                self.stats.reopens.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %self.path.display(), "CDR file reopened");
            }
            Err(error) => {
                if bump(&self.stats.reopen_errors) {
                    tracing::error!(
                        path = %self.path.display(),
                        %error,
                        "reopening the CDR file failed; still appending to the previous one"
                    );
                }
            }
        }
    }
}

/// The writer thread's clock: it is an IO shell (the module docs), and only
/// times fsync batches with it.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests;
