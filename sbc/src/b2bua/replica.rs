//! Calls another node can carry on (`[cluster]`, pure: no IO).
//!
//! With replication on ([`Core::with_replication`]), an answered call is
//! written out as a [`CallRecord`] ([`CoreEvent::Replicate`]) when it is
//! answered and again whenever something a successor needs changes: a
//! leg's remote target or route set, or an offer or answer that moved its
//! media. When it ends, [`CoreEvent::Unreplicate`] says so. The IO shell
//! carries both to Redis; the standby of the pair keeps them.
//!
//! A node that takes over adopts each record ([`Core::adopt`]): the call is
//! back as a confirmed dialog on both legs (the same Call-IDs, tags, route
//! sets and targets, so in-dialog requests and BYEs from either side find
//! it), its media anchored on the very ports the peers send to
//! ([`MediaCommand::Restore`]), and each leg's remote media set again,
//! which reopens latching (the peers' sources are learned again from the
//! first packets, under the same rules).
//!
//! What a record leaves out, on purpose:
//! * CSeq numbers are not written on every request: the adopting node
//!   starts each leg [`CSEQ_LEAP`] above the written number. A CSeq only
//!   has to grow within a dialog (RFC 3261 §12.2.1.1), so requests the dead
//!   node sent after its last write never collide with ours.
//! * Transactions in flight (a re-INVITE, a BYE) die with the node; the
//!   peers retransmit them to the successor, which answers them as new.
//! * Calls not answered yet are not written: the caller's INVITE
//!   transaction can't move to another node.
//! * TCP and TLS connections end with the node: such a leg's requests go
//!   over a new connection to the peer's address.

use serde::{Deserialize, Serialize};

use super::invite::invite_head_bytes;
use super::*;
use crate::media::command::{Direction, Remote};

/// The format of [`CallRecord`]; a record of another format is refused.
pub const RECORD_FORMAT: u32 = 1;

/// How far above the last written CSeq an adopted leg starts.
pub const CSEQ_LEAP: u32 = 1000;

/// Everything another node needs to carry a call on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// The call's number on the node that wrote it.
    pub call: u64,
    /// The inbound leg.
    pub a: LegRecord,
    /// The outbound leg.
    pub b: LegRecord,
    /// The head of A's INVITE (see `invite_head`), as text.
    pub a_invite: String,
    /// The final status A got (a 2xx).
    pub a_status: u16,
    /// The route the call took.
    pub route: String,
    /// The trunk of leg B, if it is one.
    pub trunk: Option<String>,
    /// The trunk the call came from, if its source matched one.
    pub source_trunk: Option<String>,
    /// The access realm and address-of-record the call counts against.
    pub user: Option<(String, String)>,
    /// Milliseconds from the INVITE to the write.
    pub age_ms: u64,
    /// Milliseconds from the first 18x/2xx to the write.
    pub progressed_ms: Option<u64>,
    /// Milliseconds from the answer to the write.
    pub answered_ms: Option<u64>,
    /// Per `m=` line: its anchored stream, if any.
    pub streams: Vec<Option<StreamRecord>>,
    /// The realm of leg B the streams are anchored on.
    pub media_realm_b: Option<String>,
    /// The `o=` the SBC showed each leg (A, B).
    pub origins: [Option<OriginRecord>; 2],
    /// The media address each leg (A, B) is anchored on.
    pub addresses: [Option<IpAddr>; 2],
}

/// One leg of a [`CallRecord`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegRecord {
    /// The realm's name.
    pub realm: String,
    /// `UDP`, `TCP` or `TLS`.
    pub transport: String,
    /// The listener's address.
    pub listener: SocketAddr,
    /// Where requests on the leg go.
    pub peer: SocketAddr,
    /// Call-ID, our tag, From, To, target, Via sent-by, Contact.
    pub text: [String; 7],
    /// The peer's tag is in `To`.
    pub remote_tag_known: bool,
    /// Our CSeq on the leg when written.
    pub local_cseq: u32,
    /// The leg's route set.
    pub route_set: Vec<String>,
}

/// One anchored stream of a [`CallRecord`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Leg A's and leg B's local endpoints (what their SDP names).
    pub local: [LocalEndpoint; 2],
    /// Each leg's latest remote and direction, once it sent an SDP.
    pub remote: [Option<(Remote, Direction)>; 2],
}

/// An `o=` line's numbers ([`SdpOrigin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginRecord {
    /// The session id.
    pub session_id: u64,
    /// The version last sent.
    pub version: u64,
    /// What the last SDP was made from.
    pub source: u64,
}

/// Why a record could not be adopted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdoptError {
    /// Written by a version of the SBC with another record format.
    #[error("record format {0}, this node reads {RECORD_FORMAT}")]
    Format(u32),
    /// A realm, listener or trunk of the record is not in this node's
    /// configuration.
    #[error("{0} is not configured here")]
    Unknown(String),
    /// A's INVITE head does not parse.
    #[error("the INVITE head does not parse")]
    Invite,
    /// The call is already up here.
    #[error("a dialog of the call is already up")]
    Duplicate,
    /// A stream's two legs lie in different relay threads' port shares
    /// (the nodes run different `media.relay_threads`).
    #[error("stream ports {0} and {1} belong to different relay threads")]
    Lanes(SocketAddr, SocketAddr),
}

/// Whether a call's record must be written again, and whether one was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Replica {
    /// Something a successor needs changed since the last write.
    pub(super) dirty: bool,
    /// A record of the call is out (an end must be written).
    pub(super) written: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Core {
    /// This core with replication on: answered calls are written out as
    /// [`CoreEvent::Replicate`] and [`CoreEvent::Unreplicate`].
    pub fn with_replication(mut self, on: bool) -> Core {
        self.replicate = on;
        self
    }

    /// Writes `call` out if it changed and is answered; says it ended once
    /// it is ending. Called as a call goes back into the table.
    pub(super) fn replicate_call(&mut self, now: Instant, call: &mut Call) {
        if !self.replicate {
            return;
        }
        match call.phase {
            Phase::Setup => {}
            Phase::Answered | Phase::Confirmed => {
                if call.replica.dirty
                    && let Some(record) = self.record(now, call)
                {
                    call.replica = Replica {
                        dirty: false,
                        written: true,
                    };
                    self.events
                        .push_back(CoreEvent::Replicate(Box::new(record)));
                }
            }
            Phase::Ending => self.unreplicate(call),
        }
    }

    /// Writes every answered call out again (Redis came back, and may have
    /// come back empty). Costs one record per call up, once.
    pub fn replicate_all(&mut self, now: Instant) {
        if !self.replicate {
            return;
        }
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            if let Some(mut call) = self.calls.remove(&id) {
                call.replica.dirty = true;
                self.replicate_call(now, &mut call);
                self.calls.insert(id, call);
            }
        }
    }

    /// Calls up per trunk on this node (for the other active nodes of the
    /// cluster), trunks with none included.
    pub fn trunk_calls(&self) -> Vec<(String, u32)> {
        self.trunks
            .iter()
            .filter(|t| !t.retired)
            .map(|t| (t.name.clone(), t.active))
            .collect()
    }

    /// What the other active nodes of the cluster carry: `nodes` active
    /// nodes in all (this one included; each takes that share of a trunk's
    /// `max_cps`) and, per trunk name, their calls up (counted against the
    /// trunk's `max_calls` with this node's own).
    pub fn set_cluster_load(&mut self, nodes: u32, elsewhere: &HashMap<String, u32>) {
        for trunk in &mut self.trunks {
            trunk.nodes = nodes.max(1);
            trunk.elsewhere = elsewhere.get(&trunk.name).copied().unwrap_or(0);
        }
    }

    /// Says `call` ended, if a record of it is out.
    pub(super) fn unreplicate(&mut self, call: &mut Call) {
        if std::mem::take(&mut call.replica.written) {
            self.events
                .push_back(CoreEvent::Unreplicate { call: call.id });
        }
    }

    fn leg_record(&self, leg: &LegState) -> LegRecord {
        LegRecord {
            realm: self.realms[leg.realm].name.clone(),
            transport: leg.transport.as_str().to_owned(),
            listener: self
                .listeners
                .get(leg.listener.0)
                .map_or(leg.peer, |l| l.info.addr),
            peer: leg.peer,
            text: text::ALL.map(|p| leg.text.get(p).to_owned()),
            remote_tag_known: leg.remote_tag_known,
            local_cseq: leg.local_cseq,
            route_set: leg.route_set.clone(),
        }
    }

    /// The record of an answered call.
    fn record(&self, now: Instant, call: &Call) -> Option<CallRecord> {
        let b = call.b.as_ref()?;
        let head = invite_head_bytes(&call.a_invite)?;
        let since = |at: Instant| millis(now.saturating_duration_since(at));
        let streams = call
            .media
            .streams
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let (_, local) = (*slot)?;
                Some(StreamRecord {
                    local: local?,
                    remote: call.media.remotes.get(index).copied().unwrap_or_default(),
                })
            })
            .collect();
        let origin = |o: Option<SdpOrigin>| {
            o.map(|o| OriginRecord {
                session_id: o.session_id,
                version: o.version,
                source: o.source,
            })
        };
        Some(CallRecord {
            format: RECORD_FORMAT,
            call: call.id,
            a: self.leg_record(&call.a),
            b: self.leg_record(b),
            a_invite: String::from_utf8_lossy(&head).into_owned(),
            a_status: call.a_status,
            route: call.setup.plan.route.clone(),
            trunk: call.trunk.map(|t| self.trunks[t].name.clone()),
            source_trunk: call.source_trunk.map(|t| self.trunks[t].name.clone()),
            user: call
                .user
                .as_ref()
                .map(|(realm, aor)| (self.realms[*realm].name.clone(), aor.clone())),
            age_ms: since(call.started),
            progressed_ms: call.progressed.map(since),
            answered_ms: call.answered.map(since),
            streams,
            media_realm_b: call
                .media
                .media_realm_b
                .map(|r| self.realms[r].name.clone()),
            origins: call.media.origins.map(origin),
            addresses: call.media.addresses,
        })
    }

    /// The spec of a restored leg on `local`: as [`Core::leg_spec`], with
    /// the RTCP mode it was anchored with.
    fn restored_spec(&self, realm: usize, trunk: Option<usize>, local: LocalEndpoint) -> LegSpec {
        let rtcp = if local.rtcp.is_some() {
            RtcpMode::Pair
        } else {
            RtcpMode::Mux
        };
        LegSpec {
            rtcp,
            ..self.leg_spec(realm, trunk, local.rtp.ip())
        }
    }

    fn realm_named(&self, name: &str) -> Result<usize, AdoptError> {
        self.realms
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| AdoptError::Unknown(format!("realm \"{name}\"")))
    }

    fn trunk_named(&self, name: &Option<String>) -> Result<Option<usize>, AdoptError> {
        let Some(name) = name else {
            return Ok(None);
        };
        self.trunks
            .iter()
            .position(|t| t.name == *name && !t.retired)
            .map(Some)
            .ok_or_else(|| AdoptError::Unknown(format!("trunk \"{name}\"")))
    }

    fn adopt_leg(&self, leg: &LegRecord) -> Result<LegState, AdoptError> {
        let realm = self.realm_named(&leg.realm)?;
        let listener = self
            .listeners
            .iter()
            .position(|l| {
                l.state != ListenerState::Closed
                    && l.info.addr == leg.listener
                    && l.info.transport.as_str() == leg.transport
            })
            .ok_or_else(|| {
                AdoptError::Unknown(format!("listener {} {}", leg.transport, leg.listener))
            })?;
        let info = &self.listeners[listener].info;
        let parts: [&str; 7] = std::array::from_fn(|i| leg.text[i].as_str());
        Ok(LegState {
            realm,
            listener: ListenerId(listener),
            transport: info.transport,
            peer: leg.peer,
            connection: None,
            text: LegText::new(parts),
            remote_tag_known: leg.remote_tag_known,
            local_cseq: leg.local_cseq.saturating_add(CSEQ_LEAP),
            route_set: leg.route_set.clone(),
        })
    }

    /// Takes over a call another node wrote ([`CallRecord`]): its dialogs
    /// answer here from now on and its media is anchored again on the same
    /// ports. `lane` names, for a local media port, the relay thread that
    /// owns it and how many there are (a stream's commands reach thread
    /// `id % n`). Returns the call's number here.
    pub fn adopt(
        &mut self,
        now: Instant,
        record: &CallRecord,
        lane: &dyn Fn(SocketAddr) -> Option<(usize, usize)>,
    ) -> Result<u64, AdoptError> {
        if record.format != RECORD_FORMAT {
            return Err(AdoptError::Format(record.format));
        }
        let a = self.adopt_leg(&record.a)?;
        let b = self.adopt_leg(&record.b)?;
        if self.dialogs.contains_key(&a.dialog_key()) || self.dialogs.contains_key(&b.dialog_key())
        {
            return Err(AdoptError::Duplicate);
        }
        let a_invite = Message::parse(record.a_invite.as_bytes())
            .map_err(|_| AdoptError::Invite)?
            .clone();
        let trunk = self.trunk_named(&record.trunk)?;
        let source_trunk = self.trunk_named(&record.source_trunk)?;
        let media_realm_b = match &record.media_realm_b {
            Some(name) => Some(self.realm_named(name)?),
            None => None,
        };
        let user = match &record.user {
            Some((realm, aor)) => Some((self.realm_named(realm)?, aor.clone())),
            None => None,
        };
        // Each stream's id reaches the relay thread that owns its ports.
        let mut lanes = Vec::with_capacity(record.streams.len());
        for stream in record.streams.iter().flatten() {
            let [la, lb] = stream.local.map(|l| lane(l.rtp));
            match (la, lb) {
                (Some(la), Some(lb)) if la == lb => lanes.push(la),
                _ => return Err(AdoptError::Lanes(stream.local[0].rtp, stream.local[1].rtp)),
            }
        }

        let id = self.next_call;
        self.next_call += 1;
        let ago = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
        let mut media = CallMedia {
            media_realm_b,
            origins: record.origins.map(|o| {
                o.map(|o| SdpOrigin {
                    session_id: o.session_id,
                    version: o.version,
                    source: o.source,
                })
            }),
            ..CallMedia::default()
        };
        let mut lanes = lanes.into_iter();
        for (index, slot) in record.streams.iter().enumerate() {
            let Some(stream) = slot else {
                media.streams.push(None);
                continue;
            };
            let (k, n) = lanes.next().unwrap_or((0, 1));
            let n = n.max(1) as u64;
            while self.next_stream % n != k as u64 {
                self.next_stream += 1;
            }
            let id_here = StreamId(self.next_stream);
            self.next_stream += 1;
            self.streams.insert(id_here, id);
            let b_realm = media_realm_b.unwrap_or(b.realm);
            let specs = [
                self.restored_spec(a.realm, source_trunk, stream.local[0]),
                self.restored_spec(b_realm, trunk, stream.local[1]),
            ];
            self.media_out.push_back(MediaCommand::Restore {
                stream: id_here,
                legs: specs,
                at: Box::new(stream.local),
            });
            for (leg, remote) in [Leg::A, Leg::B].into_iter().zip(stream.remote) {
                if let Some((remote, direction)) = remote {
                    self.media_out.push_back(MediaCommand::SetRemote {
                        stream: id_here,
                        leg,
                        remote,
                    });
                    self.media_out.push_back(MediaCommand::SetDirection {
                        stream: id_here,
                        leg,
                        direction,
                    });
                }
            }
            media.streams.push(Some((id_here, Some(stream.local))));
            if self.replicate {
                media.remotes.resize(index + 1, [None; 2]);
                media.remotes[index] = stream.remote;
            }
        }
        for (slot, ip) in media.addresses.iter_mut().zip(record.addresses) {
            if let Some(ip) = ip {
                *slot = Some(ip);
                *self.media_load.entry(ip).or_default() += 1;
            }
        }
        if let Some(t) = trunk {
            self.trunks[t].adopt();
        }
        self.count_user_call(user.as_ref(), true);
        self.dialogs.insert(a.dialog_key(), (id, Side::A));
        self.dialogs.insert(b.dialog_key(), (id, Side::B));
        let mut setup = Setup::new(Plan {
            route: record.route.clone(),
            targets: Vec::new(),
            failover_on: Vec::new(),
        });
        setup.progress = Progress::Ringing;
        let call = Box::new(Call {
            id,
            phase: Phase::Confirmed,
            a,
            b: Some(b),
            a_invite,
            a_server: ServerId::DETACHED,
            a_final: true,
            b_invite: None,
            setup,
            trunk,
            source_trunk,
            owed_2xx: None,
            b_ack: None,
            a_ack: None,
            media,
            pending: VecDeque::new(),
            relayed: HashMap::new(),
            end: Ending::default(),
            started: ago(record.age_ms),
            progressed: record.progressed_ms.map(ago),
            answered: record.answered_ms.map(ago),
            a_status: record.a_status,
            guarded: None,
            user,
            in_setup: false,
            // Written again under this node's name.
            replica: Replica {
                dirty: true,
                written: false,
            },
        });
        self.put_back(now, call);
        Ok(id)
    }
}
