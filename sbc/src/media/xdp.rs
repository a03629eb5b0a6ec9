//! The XDP backend of the media relay: loads `relay-ebpf`, attaches it to the
//! configured interfaces, owns its maps, installs latched flows and reads the
//! counters.
//!
//! Owns: the loaded program, its links and all four maps, in one
//! [`XdpRelay`] value. The daemon keeps it in one task and sends it commands;
//! nothing here is shared or locked (no `Arc<Mutex<_>>` per map). Dropping it
//! detaches the program from every interface.
//!
//! May not: decide anything about calls or latching. Userspace latches a flow
//! (symmetric RTP with the strict policy of `media/`) and only then installs
//! it here; the program forwards exactly what the [`FlowAction`] says and
//! passes everything else to the kernel, where the userspace relay takes it.
//! This is an IO shell: it does syscalls (bpf, netlink) and no protocol logic.
//!
//! Attach order per interface: native (driver) mode, then generic (SKB) mode,
//! then none (userspace only). Each step down is recorded with its reason in
//! [`Attachment::fallbacks`] for the daemon to log and export.
//!
//! Pinning: with [`XdpConfig::pin_dir`] (on bpffs, e.g. `/sys/fs/bpf/sbc`)
//! the flow, flow-counter and egress maps are pinned there, and so is each
//! interface's link (`link_<interface>_<mode>`): a `bpf_link` stays attached
//! as long as its pin exists, whoever holds it. A start finds the links the
//! previous process left and adopts them: its freshly loaded program
//! replaces the old one in each link atomically (`BPF_LINK_UPDATE`), so the
//! interface never runs without a program, and the pinned maps (with the
//! flows the old process installed) are reused. What an exit leaves behind
//! is [`ExitPolicy`]'s choice, made by the daemon before it drops this
//! value: a plain stop removes the pins (the links then detach, the NIC is
//! clean); anything else (a restart, a failed start, a crash) keeps them,
//! so latched flows stay forwarded by the kernel while no process runs. Without a pin directory nothing is pinned
//! and dropping detaches, as before. A kernel that attaches XDP only
//! through netlink (no `bpf_link`, before 5.9) cannot pin: the attachment
//! says so and that interface detaches at exit.
//!
//! Requirements on the host: root (or CAP_BPF + CAP_NET_ADMIN), and IP
//! forwarding enabled on the attached interfaces: the program's next-hop
//! lookup (`bpf_fib_lookup`) is an input lookup, which the kernel refuses
//! where forwarding is off (the flows are then relayed in userspace,
//! counted as `pass_no_route`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aya::maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, xdp::DevMapHash};
use aya::pin::PinError;
use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode as AyaXdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use relay_common::{
    FlowAction, FlowCounters, FlowKey, MAP_EGRESS, MAP_FLOW_COUNTERS, MAP_FLOWS, MAP_STATS,
    PROGRAM, stat,
};
use thiserror::Error;

/// The eBPF object built by `sbc/build.rs`, when the build had the toolchain.
#[cfg(not(sbc_xdp_missing))]
static OBJECT: Option<&[u8]> = Some(include_bytes!(env!("SBC_XDP_OBJECT")));
#[cfg(sbc_xdp_missing)]
static OBJECT: Option<&[u8]> = None;

/// Why the object is missing, as the build script found it.
#[cfg(sbc_xdp_missing)]
const MISSING: &str = env!("SBC_XDP_MISSING");
#[cfg(not(sbc_xdp_missing))]
const MISSING: &str = "";

/// Whether this binary carries the XDP program. When it does not,
/// [`not_built_in_reason`] says why; the daemon logs it and exports it.
pub const BUILT_IN: bool = cfg!(not(sbc_xdp_missing));

/// Why the fast path is not built in (`None` when it is).
#[must_use]
pub fn not_built_in_reason() -> Option<&'static str> {
    if BUILT_IN { None } else { Some(MISSING) }
}

/// The eBPF object itself, for tools that load its other programs (the
/// benchmarks' `sbc_bounce` and `sbc_sink`); `None` when not built in.
#[must_use]
pub fn object() -> Option<&'static [u8]> {
    OBJECT
}

/// Which attach modes an interface may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModePolicy {
    /// Native, else generic, else userspace only.
    #[default]
    Auto,
    /// Native or userspace only (generic XDP costs more than it saves on
    /// some hosts).
    NativeOnly,
    /// Generic or userspace only (e.g. drivers with a broken native path).
    GenericOnly,
}

/// The mode an interface ended up in: the value of the exported metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver, before any allocation.
    Native,
    /// In the kernel stack (SKB mode): slower, works on every interface.
    Generic,
    /// No program attached: the userspace relay moves every packet.
    Userspace,
}

impl XdpMode {
    /// Label for metrics and logs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Userspace => "userspace",
        }
    }
}

/// Why one attach mode was not used on an interface.
#[derive(Debug, Error)]
pub enum FallbackReason {
    /// The mode policy of the interface excludes this mode.
    #[error("{} mode excluded by the configured mode policy", .0.as_str())]
    ExcludedByPolicy(XdpMode),
    /// The interface does not exist: check the configured name.
    #[error("no such interface")]
    UnknownInterface,
    /// The kernel refused to attach in this mode (e.g. the driver has no
    /// native XDP, or another program is attached).
    #[error("the kernel refused {} mode: {source}", mode.as_str())]
    Refused {
        /// The mode tried.
        mode: XdpMode,
        /// What the kernel (through aya) said.
        #[source]
        source: ProgramError,
    },
}

/// One step down the attach order.
#[derive(Debug)]
pub struct Fallback {
    /// The mode that was not used.
    pub skipped: XdpMode,
    /// Why.
    pub reason: FallbackReason,
}

/// The outcome of attaching to one interface. Never an error: the worst case
/// is [`XdpMode::Userspace`] with the reasons in `fallbacks`.
#[derive(Debug)]
pub struct Attachment {
    /// Interface name as configured.
    pub interface: String,
    /// Its index (0 if it does not exist).
    pub ifindex: u32,
    /// The mode in use.
    pub mode: XdpMode,
    /// The modes skipped before it, in order, with their reasons.
    pub fallbacks: Vec<Fallback>,
    /// Why other interfaces cannot redirect to this one, if they cannot: the
    /// program still forwards here by `XDP_TX`, and passes what would need a
    /// redirect to userspace.
    pub redirect_error: Option<XdpError>,
    /// Whether the link was adopted from the pin directory (a previous
    /// process's, now running this program) rather than made new.
    pub adopted: bool,
    /// Why the link is not pinned although a pin directory is configured
    /// (it then detaches at exit whatever the exit policy).
    pub pin_error: Option<XdpError>,
}

/// Errors of the XDP backend.
#[derive(Debug, Error)]
pub enum XdpError {
    /// The binary was built without the eBPF object; rebuild with the nightly
    /// toolchain and its `rust-src` and `llvm-tools` components.
    #[error("the XDP fast path is not built into this binary: {0}")]
    NotBuiltIn(&'static str),
    /// The pin directory could not be created (is bpffs mounted there?).
    #[error("cannot create the BPF pin directory {path}: {source}")]
    PinDir {
        /// The configured directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Parsing the object or creating its maps failed (no privileges, or a
    /// pinned map left by an incompatible version: remove the pin directory).
    #[error("loading the XDP object failed: {0}")]
    Load(#[from] EbpfError),
    /// The object lacks a map or program this code expects: the object and
    /// this crate were built from different sources.
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
    /// The kernel refused the program (the verifier log is in the error).
    #[error("the XDP program was refused: {0}")]
    Program(#[from] ProgramError),
    /// A pinned link could not be opened or used (e.g. a pin left by
    /// something else than this daemon: remove it).
    #[error("the pinned XDP link {path} is unusable: {source}")]
    Link {
        /// The pin.
        path: PathBuf,
        /// What aya said.
        #[source]
        source: LinkError,
    },
    /// A link could not be pinned (is the pin directory on bpffs?).
    #[error("pinning the XDP link at {path} failed: {source}")]
    Pin {
        /// The pin.
        path: PathBuf,
        /// What aya said.
        #[source]
        source: PinError,
    },
    /// The kernel attached the program through netlink, which has no
    /// `bpf_link` to pin (kernels before 5.9).
    #[error("the kernel attached XDP without a bpf_link; nothing to pin")]
    NotPinnable,
    /// A map operation failed.
    #[error("XDP map operation on {map} failed: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The error.
        #[source]
        source: MapError,
    },
}

impl XdpError {
    /// Whether the kernel refused for lack of privilege (EPERM or EACCES
    /// anywhere in the error's chain: no CAP_BPF/CAP_NET_ADMIN, or a
    /// locked-down kernel), as opposed to a broken object or a refusal by
    /// the verifier.
    pub fn is_permission_denied(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = next {
            if let Some(io) = error.downcast_ref::<io::Error>()
                && (io.kind() == io::ErrorKind::PermissionDenied
                    || matches!(io.raw_os_error(), Some(1 | 13)))
            {
                return true;
            }
            next = error.source();
        }
        false
    }
}

/// Configuration of the fast path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// Where to pin the links and flow maps so they survive a restart (a
    /// directory on bpffs); `None`: not pinned.
    pub pin_dir: Option<PathBuf>,
}

/// What dropping an [`XdpRelay`] with a pin directory leaves behind. Shared
/// (an atomic flag) so the daemon can decide at exit while the relay thread
/// owns the value.
///
/// The default keeps the pins: a start that fails half-way, a panic or a
/// restart must not take away the forwarding a previous process left. Only
/// an orderly stop asks for [`detach`](Self::detach).
#[derive(Clone, Debug, Default)]
pub struct ExitPolicy(Arc<AtomicBool>);

impl ExitPolicy {
    /// Remove the pins at drop (a plain stop): the links detach and the
    /// next start begins with empty maps.
    pub fn detach(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`detach`](Self::detach) was asked for; otherwise the links
    /// and maps stay pinned and latched flows go on being forwarded by the
    /// kernel until the next process adopts them.
    pub fn detaches(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A link this value holds outside the program's own list: pinned at `path`.
#[derive(Debug)]
struct HeldLink {
    path: PathBuf,
    /// Closing it does not detach while the pin exists.
    _link: FdLink,
}

/// The maps pinned in the pin directory (the per-CPU verdict counters are
/// not: they start at zero with each process, like every other counter).
const PINNED_MAPS: [&str; 3] = [MAP_FLOWS, MAP_FLOW_COUNTERS, MAP_EGRESS];

/// The pin of `interface`'s link in `mode` (the mode is in the name because
/// the kernel's link info does not say it).
fn link_pin(dir: &Path, interface: &str, mode: XdpMode) -> PathBuf {
    dir.join(format!("link_{interface}_{}", mode.as_str()))
}

/// The result of one `BPF_PROG_TEST_RUN` of the program on a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The XDP action returned (`XDP_PASS` = 2, `XDP_TX` = 3, ...).
    pub action: u32,
    /// Bytes written to the output buffer (the packet as the program left it).
    pub len: usize,
}

/// What the kernel reports about the loaded program (for the start-up log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramSize {
    /// Instructions the verifier processed (all paths), if the kernel says.
    pub verified_instructions: Option<u32>,
    /// Size of the translated (pre-JIT) program in bytes, if the kernel says.
    pub translated_bytes: Option<u32>,
}

/// Verdict counters of the program, summed over CPUs, indexed by
/// [`relay_common::stat`] (labels in [`relay_common::stat::NAMES`]).
pub type VerdictStats = [u64; stat::COUNT as usize];

/// The loaded program and the single owner of its maps.
pub struct XdpRelay {
    /// Declared first: the pins go before the program (see `Drop`).
    held: Vec<HeldLink>,
    pin_dir: Option<PathBuf>,
    exit: ExitPolicy,
    ebpf: Ebpf,
    flows: HashMap<MapData, FlowKey, FlowAction>,
    counters: PerCpuHashMap<MapData, FlowKey, FlowCounters>,
    stats: PerCpuArray<MapData, u64>,
    egress: DevMapHash<MapData>,
}

impl std::fmt::Debug for XdpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpRelay").finish_non_exhaustive()
    }
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> XdpError {
    move |source| XdpError::Map { map, source }
}

impl XdpRelay {
    /// Loads the object, creates (or, with a pin directory, reuses) its maps
    /// and loads the program into the kernel, attached nowhere yet.
    ///
    /// # Errors
    /// See [`XdpError`]: not built in, no privileges, verifier refusal.
    pub fn load(config: &XdpConfig) -> Result<Self, XdpError> {
        let object = OBJECT.ok_or(XdpError::NotBuiltIn(MISSING))?;
        let mut loader = EbpfLoader::new();
        if let Some(dir) = &config.pin_dir {
            fs::create_dir_all(dir).map_err(|source| XdpError::PinDir {
                path: dir.clone(),
                source,
            })?;
            for name in PINNED_MAPS {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(object)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing("program"))?
            .try_into()?;
        program.load()?;
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(XdpError::Missing(name));
        let flows = take(MAP_FLOWS)?;
        let counters = take(MAP_FLOW_COUNTERS)?;
        let stats = take(MAP_STATS)?;
        let egress = take(MAP_EGRESS)?;
        Ok(Self {
            held: Vec::new(),
            pin_dir: config.pin_dir.clone(),
            exit: ExitPolicy::default(),
            flows: HashMap::try_from(flows).map_err(map_err(MAP_FLOWS))?,
            counters: PerCpuHashMap::try_from(counters).map_err(map_err(MAP_FLOW_COUNTERS))?,
            stats: PerCpuArray::try_from(stats).map_err(map_err(MAP_STATS))?,
            egress: DevMapHash::try_from(egress).map_err(map_err(MAP_EGRESS))?,
            ebpf,
        })
    }

    fn program(&mut self) -> Result<&mut Xdp, XdpError> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing("program"))?
            .try_into()?)
    }

    fn program_ref(&self) -> Result<&Xdp, XdpError> {
        Ok(self
            .ebpf
            .program(PROGRAM)
            .ok_or(XdpError::Missing("program"))?
            .try_into()?)
    }

    /// The kernel's figures for the loaded program.
    ///
    /// # Errors
    /// The `BPF_OBJ_GET_INFO_BY_FD` syscall failed.
    pub fn program_size(&self) -> Result<ProgramSize, XdpError> {
        let program = self.program_ref()?;
        let info = program.info()?;
        Ok(ProgramSize {
            verified_instructions: info.verified_instruction_count(),
            translated_bytes: info.size_translated(),
        })
    }

    /// Attaches to `interface`: native mode, else generic, else none, as the
    /// policy allows; the interface also becomes a redirect target. Never
    /// fails: the outcome and every fallback's reason are in the result.
    pub fn attach(&mut self, interface: &str, policy: ModePolicy) -> Attachment {
        let mut attachment = Attachment {
            interface: interface.to_string(),
            ifindex: ifindex(interface),
            mode: XdpMode::Userspace,
            fallbacks: Vec::new(),
            redirect_error: None,
            adopted: false,
            pin_error: None,
        };
        if attachment.ifindex == 0 {
            attachment.fallbacks.push(Fallback {
                skipped: XdpMode::Native,
                reason: FallbackReason::UnknownInterface,
            });
            return attachment;
        }
        // Whether a pinned link of this interface was let go here: the kernel
        // frees a link whose pin is removed from a work queue, so for a
        // moment the interface may still have it.
        let mut released = false;
        if let Some(dir) = self.pin_dir.clone() {
            for mode in [XdpMode::Native, XdpMode::Generic] {
                let pin = link_pin(&dir, interface, mode);
                if !pin.exists() {
                    continue;
                }
                let allowed = match mode {
                    XdpMode::Native => policy != ModePolicy::GenericOnly,
                    XdpMode::Generic => policy != ModePolicy::NativeOnly,
                    XdpMode::Userspace => false,
                };
                if !allowed {
                    // The configured mode changed since the pin was made:
                    // this interface pays a gap to change it.
                    tracing::info!(pin = %pin.display(), "pinned XDP link in a mode the configuration excludes; attaching anew");
                    released |= fs::remove_file(&pin).is_ok();
                    continue;
                }
                match self.adopt(&pin) {
                    Ok(()) => {
                        attachment.mode = mode;
                        attachment.adopted = true;
                        attachment.redirect_error = self.allow_egress(attachment.ifindex).err();
                        return attachment;
                    }
                    Err(e) => {
                        // Removing the pin detaches what it held; a fresh
                        // attach follows.
                        tracing::warn!(pin = %pin.display(), error = %e, "pinned XDP link not adopted; attaching anew");
                        released |= fs::remove_file(&pin).is_ok();
                    }
                }
            }
        }
        for (mode, aya_mode, allowed) in [
            (
                XdpMode::Native,
                AyaXdpMode::Driver,
                policy != ModePolicy::GenericOnly,
            ),
            (
                XdpMode::Generic,
                AyaXdpMode::Skb,
                policy != ModePolicy::NativeOnly,
            ),
        ] {
            if !allowed {
                attachment.fallbacks.push(Fallback {
                    skipped: mode,
                    reason: FallbackReason::ExcludedByPolicy(mode),
                });
                continue;
            }
            let mut attached = self
                .program()
                .and_then(|p| Ok(p.attach_to_if_index(attachment.ifindex, aya_mode)?));
            // The released link may still hold the interface: wait for the
            // kernel to free it (bounded), rather than fall back.
            let mut waits = 0;
            while released
                && waits < RELEASE_WAITS
                && attached.as_ref().err().is_some_and(still_attached)
            {
                std::thread::sleep(RELEASE_WAIT);
                waits += 1;
                attached = self
                    .program()
                    .and_then(|p| Ok(p.attach_to_if_index(attachment.ifindex, aya_mode)?));
            }
            match attached {
                Ok(link) => {
                    attachment.mode = mode;
                    if let Some(dir) = self.pin_dir.clone() {
                        let pin = link_pin(&dir, interface, mode);
                        attachment.pin_error =
                            self.pin(link, &pin, attachment.ifindex, aya_mode).err();
                    }
                    break;
                }
                Err(XdpError::Program(source)) => attachment.fallbacks.push(Fallback {
                    skipped: mode,
                    reason: FallbackReason::Refused { mode, source },
                }),
                // program() only fails on an object without the program,
                // which load() already ruled out.
                Err(_) => break,
            }
        }
        if attachment.mode != XdpMode::Userspace {
            // Without the device-map entry the program passes packets routed
            // out of this interface from another one; not fatal either.
            attachment.redirect_error = self.allow_egress(attachment.ifindex).err();
        }
        attachment
    }

    /// Makes a pinned link (a previous process's) run this program: the
    /// kernel swaps the program in the link atomically.
    fn adopt(&mut self, pin: &Path) -> Result<(), XdpError> {
        let link_err = |source| XdpError::Link {
            path: pin.to_path_buf(),
            source,
        };
        let pinned = PinnedLink::from_pin(pin).map_err(link_err)?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(link_err)?;
        let program = self.program()?;
        let id = program.attach_to_link(link)?;
        let link = program.take_link(id)?;
        let link = FdLink::try_from(link).map_err(link_err)?;
        self.held.push(HeldLink {
            path: pin.to_path_buf(),
            _link: link,
        });
        Ok(())
    }

    /// Pins a link the program just made at `pin`. A netlink attachment has
    /// no link to pin: it is made again and left to the program (it then
    /// detaches at exit).
    fn pin(
        &mut self,
        link: aya::programs::xdp::XdpLinkId,
        pin: &Path,
        ifindex: u32,
        mode: AyaXdpMode,
    ) -> Result<(), XdpError> {
        let program = self.program()?;
        let link = program.take_link(link)?;
        match FdLink::try_from(link) {
            Ok(link) => {
                let pinned = link.pin(pin).map_err(|source| XdpError::Pin {
                    path: pin.to_path_buf(),
                    source,
                })?;
                self.held.push(HeldLink {
                    path: pin.to_path_buf(),
                    _link: FdLink::from(pinned),
                });
                Ok(())
            }
            Err(_) => {
                // The netlink link was detached when `try_from` consumed it.
                self.program()?.attach_to_if_index(ifindex, mode)?;
                Err(XdpError::NotPinnable)
            }
        }
    }

    /// Removes the pinned links of interfaces this process did not attach
    /// to (dropped from the configuration since the last run), which
    /// detaches them. Call once every configured interface is attached.
    pub fn forget_stale_links(&mut self) -> Vec<PathBuf> {
        let Some(dir) = &self.pin_dir else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let is_link = entry.file_name().to_string_lossy().starts_with("link_");
            if is_link
                && !self.held.iter().any(|h| h.path == path)
                && fs::remove_file(&path).is_ok()
            {
                removed.push(path);
            }
        }
        removed
    }

    /// What an exit leaves behind: [`ExitPolicy::detach`] on the returned
    /// handle before dropping this value removes the pins.
    pub fn exit_policy(&self) -> ExitPolicy {
        self.exit.clone()
    }

    /// Every flow installed in the map (after a restart: those the previous
    /// process installed), at most `limit`.
    ///
    /// # Errors
    /// Iterating the map failed.
    pub fn flow_keys(&self, limit: usize) -> Result<Vec<FlowKey>, XdpError> {
        let mut keys = Vec::new();
        for key in self.flows.keys().take(limit) {
            keys.push(key.map_err(map_err(MAP_FLOWS))?);
        }
        Ok(keys)
    }

    /// Lets the program redirect to `ifindex` (interfaces the program is
    /// attached to are added by [`attach`](Self::attach)).
    ///
    /// # Errors
    /// The map update failed.
    pub fn allow_egress(&mut self, ifindex: u32) -> Result<(), XdpError> {
        self.egress
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| match e {
                aya::maps::xdp::XdpMapError::MapError(source) => XdpError::Map {
                    map: MAP_EGRESS,
                    source,
                },
                aya::maps::xdp::XdpMapError::ChainedProgramNotSupported => XdpError::Missing(
                    "support for chained device-map programs (none is used: unreachable)",
                ),
            })
    }

    /// Installs or replaces the flow of `key`. Replacing is atomic for the
    /// program: a packet sees the old or the new action, never a mix.
    ///
    /// # Errors
    /// The map update failed (e.g. the flow map is full).
    pub fn install(&mut self, key: &FlowKey, action: &FlowAction) -> Result<(), XdpError> {
        self.flows
            .insert(key, action, 0)
            .map_err(map_err(MAP_FLOWS))
    }

    /// Removes the flow of `key` and its counters; returns whether it existed.
    ///
    /// # Errors
    /// A map operation failed for another reason than a missing key.
    pub fn remove(&mut self, key: &FlowKey) -> Result<bool, XdpError> {
        let existed = match self.flows.remove(key) {
            Ok(()) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(map_err(MAP_FLOWS)(e)),
        };
        match self.counters.remove(key) {
            Ok(()) => Ok(existed),
            Err(e) if is_not_found(&e) => Ok(existed),
            Err(e) => Err(map_err(MAP_FLOW_COUNTERS)(e)),
        }
    }

    /// The installed action of `key`, if any.
    ///
    /// # Errors
    /// The map lookup failed for another reason than a missing key.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowAction>, XdpError> {
        match self.flows.get(key, 0) {
            Ok(action) => Ok(Some(action)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(MAP_FLOWS)(e)),
        }
    }

    /// The counters of `key` summed over CPUs (`last_seen_ns` is the latest,
    /// CLOCK_MONOTONIC); `None` before the program saw a packet of the flow.
    ///
    /// # Errors
    /// The map lookup failed for another reason than a missing key.
    pub fn counters(&self, key: &FlowKey) -> Result<Option<FlowCounters>, XdpError> {
        match self.counters.get(key, 0) {
            Ok(per_cpu) => Ok(Some(
                per_cpu
                    .iter()
                    .fold(FlowCounters::default(), |a, c| a.merge(*c)),
            )),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(MAP_FLOW_COUNTERS)(e)),
        }
    }

    /// The verdict counters summed over CPUs.
    ///
    /// # Errors
    /// The map lookup failed.
    pub fn stats(&self) -> Result<VerdictStats, XdpError> {
        let mut out = [0u64; stat::COUNT as usize];
        for (index, slot) in (0u32..).zip(out.iter_mut()) {
            let per_cpu = self.stats.get(&index, 0).map_err(map_err(MAP_STATS))?;
            *slot = per_cpu.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(out)
    }

    /// Runs the program once on `packet` (an Ethernet frame) with
    /// `BPF_PROG_TEST_RUN`, without any interface; the packet as the program
    /// left it is written to `out`. The run sees the caller's network
    /// namespace (its loopback is the ingress interface) and updates the maps
    /// like a real packet. For tests and diagnostics.
    ///
    /// # Errors
    /// The syscall failed (e.g. `out` is too small: `ENOSPC`).
    pub fn test_run(&self, packet: &[u8], out: &mut [u8]) -> Result<TestRunOutcome, XdpError> {
        self.run(packet, out, None)
    }

    /// [`test_run`](Self::test_run) with `ifindex` (of the caller's network
    /// namespace) as the ingress interface instead of loopback.
    ///
    /// # Errors
    /// The syscall failed (e.g. no such interface: `ENODEV`).
    pub fn test_run_on(
        &self,
        packet: &[u8],
        out: &mut [u8],
        ifindex: u32,
    ) -> Result<TestRunOutcome, XdpError> {
        self.run(packet, out, Some(ifindex))
    }

    fn run(
        &self,
        packet: &[u8],
        out: &mut [u8],
        ingress: Option<u32>,
    ) -> Result<TestRunOutcome, XdpError> {
        let program = self.program_ref()?;
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex }: the kernel wants data = 0 and
        // data_end = the packet's length.
        let ctx: Option<[u8; 24]> = ingress.map(|ifindex| {
            let len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
            let mut md = [0u8; 24];
            md[4..8].copy_from_slice(&len.to_ne_bytes());
            md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            md
        });
        let result = program.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(out),
            ctx_in: ctx.as_ref().map(|c| &c[..]),
            ..TestRunOptions::new()
        })?;
        Ok(TestRunOutcome {
            action: result.return_value,
            len: result.data_size_out as usize,
        })
    }
}

impl Drop for XdpRelay {
    /// A plain stop ([`ExitPolicy::detach`]) removes the pins: the held
    /// links then detach as they close, and the next start begins with
    /// empty maps. Otherwise they are left for the next process.
    fn drop(&mut self) {
        let Some(dir) = &self.pin_dir else {
            return;
        };
        if !self.exit.detaches() {
            tracing::info!(dir = %dir.display(), links = self.held.len(), "XDP links and flow maps left pinned for the next process");
            return;
        }
        for held in &self.held {
            let _ = fs::remove_file(&held.path);
        }
        for name in PINNED_MAPS {
            let _ = fs::remove_file(dir.join(name));
        }
    }
}

/// A lookup reports a missing key as `KeyNotFound`, a delete as `ENOENT`.
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// The index of `interface` in the calling thread's network namespace, 0 if
/// there is none.
#[allow(unsafe_code)] // one libc call; no safe wrapper in our dependencies
fn ifindex(interface: &str) -> u32 {
    let Ok(name) = std::ffi::CString::new(interface) else {
        return 0;
    };
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// How long, at most, an attach waits for a released link to be freed:
/// [`RELEASE_WAITS`] times [`RELEASE_WAIT`].
const RELEASE_WAITS: u32 = 100;
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether an attach failed because the interface still has an XDP link
/// (`bpf_link_create` says EEXIST).
fn still_attached(e: &XdpError) -> bool {
    matches!(
        e,
        XdpError::Program(aya::programs::ProgramError::SyscallError(err))
            if err.io_error.kind() == std::io::ErrorKind::AlreadyExists
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_is_found_in_the_error_chain_not_in_its_text() {
        let denied = XdpError::PinDir {
            path: PathBuf::from("/sys/fs/bpf/sbc"),
            source: io::Error::from_raw_os_error(1),
        };
        assert!(denied.is_permission_denied());
        let missing = XdpError::PinDir {
            path: PathBuf::from("/sys/fs/bpf/sbc"),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(!missing.is_permission_denied());
        assert!(!XdpError::Missing("a program named permission").is_permission_denied());
    }
}
