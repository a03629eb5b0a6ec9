//! The kernel scheduling class and CPUs of the daemon's threads.
//!
//! Owns: setting and reading one thread's policy and real-time priority
//! (`pthread_setschedparam`) and the CPUs it may run on
//! (`sched_setaffinity`), and the CPU list syntax of the configuration
//! ([`CpuList`]). What gets which is the daemon's choice (`[scheduling]` in
//! the configuration): the signaling threads take theirs at start, before
//! the runtime exists, so every thread the daemon creates inherits them;
//! the media relay threads set their own as they start.

use std::fmt;
use std::io;
use std::str::FromStr;

/// A thread's scheduling class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The kernel's time-sharing scheduler (`SCHED_OTHER`), where every
    /// thread starts.
    Normal,
    /// `SCHED_FIFO` at this priority (1-99): runs before every normal
    /// thread and every real-time one of lower priority, until it blocks.
    Fifo(u8),
    /// `SCHED_RR` at this priority (1-99): as `Fifo`, but threads of the
    /// same priority take turns (a time slice each).
    RoundRobin(u8),
}

impl Class {
    fn policy_and_priority(self) -> (libc::c_int, libc::c_int) {
        match self {
            Class::Normal => (libc::SCHED_OTHER, 0),
            Class::Fifo(p) => (libc::SCHED_FIFO, libc::c_int::from(p)),
            Class::RoundRobin(p) => (libc::SCHED_RR, libc::c_int::from(p)),
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::Normal => f.write_str("SCHED_OTHER"),
            Class::Fifo(p) => write!(f, "SCHED_FIFO priority {p}"),
            Class::RoundRobin(p) => write!(f, "SCHED_RR priority {p}"),
        }
    }
}

/// Puts the calling thread in `class`. Threads it creates afterwards
/// inherit it. A real-time class needs root, `CAP_SYS_NICE` or an
/// `RLIMIT_RTPRIO` at least the priority; `Normal` never needs a privilege.
#[allow(unsafe_code)] // one libc call; no safe wrapper in std or our dependencies
pub fn set_current_thread(class: Class) -> io::Result<()> {
    let (policy, priority) = class.policy_and_priority();
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `pthread_self()` is the calling thread, alive for the call;
    // `param` is a valid, initialised `sched_param` read during the call.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// The calling thread's class (a policy the daemon never sets, such as
/// `SCHED_BATCH`, reads as `Normal`).
#[allow(unsafe_code)] // one libc call; no safe wrapper in std or our dependencies
pub fn current_thread() -> io::Result<Class> {
    let mut policy: libc::c_int = 0;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `pthread_self()` is the calling thread; both out-pointers
    // point to live, writable locals.
    let rc = unsafe { libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let priority = u8::try_from(param.sched_priority).unwrap_or(u8::MAX);
    Ok(match policy {
        libc::SCHED_FIFO => Class::Fifo(priority),
        libc::SCHED_RR => Class::RoundRobin(priority),
        _ => Class::Normal,
    })
}

/// A set of CPUs, written as taskset(1), `isolcpus=` and the kernel's
/// `Cpus_allowed_list` write it: numbers and ranges, comma-separated
/// (`"2-5,8"`). Sorted, without repeats, never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

/// CPU numbers run below this (`CPU_SETSIZE`: what one `cpu_set_t` holds).
pub const MAX_CPUS: usize = 1024;

impl CpuList {
    /// The CPUs of `cpus` (sorted, repeats dropped); `None` when empty or
    /// when one is not below [`MAX_CPUS`].
    pub fn new(cpus: impl IntoIterator<Item = usize>) -> Option<CpuList> {
        let mut cpus: Vec<usize> = cpus.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        (!cpus.is_empty() && cpus.iter().all(|c| *c < MAX_CPUS)).then_some(CpuList(cpus))
    }

    /// One CPU.
    pub fn one(cpu: usize) -> Option<CpuList> {
        CpuList::new([cpu])
    }

    /// The CPUs, ascending.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    /// How many CPUs (at least 1).
    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The CPUs of this list that `other` lacks (`None`: all are in it).
    pub fn not_in(&self, other: &CpuList) -> Option<CpuList> {
        CpuList::new(self.0.iter().copied().filter(|c| !other.0.contains(c)))
    }
}

impl FromStr for CpuList {
    type Err = String;

    fn from_str(text: &str) -> Result<CpuList, String> {
        // Each number checked on its own, so a range never runs past the set.
        let number = |s: &str| {
            let s = s.trim();
            let n = s
                .parse::<usize>()
                .ok()
                .filter(|_| !s.starts_with('+'))
                .ok_or_else(|| format!("{s:?} is not a CPU number"))?;
            if n >= MAX_CPUS {
                return Err(format!("CPU {n} is not below {MAX_CPUS}"));
            }
            Ok(n)
        };
        let mut cpus = Vec::new();
        for part in text.split(',') {
            match part.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (number(first)?, number(last)?);
                    if first > last {
                        return Err(format!("the range {first}-{last} runs backwards"));
                    }
                    cpus.extend(first..=last);
                }
                None => cpus.push(number(part)?),
            }
        }
        CpuList::new(cpus).ok_or_else(|| "no CPU is listed".to_owned())
    }
}

impl fmt::Display for CpuList {
    /// The kernel's own form: ranges of three or more written `a-b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            match end - start {
                0 => write!(f, "{start}")?,
                1 => write!(f, "{start},{end}")?,
                _ => write!(f, "{start}-{end}")?,
            }
            i += 1;
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for CpuList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<CpuList, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|why| {
            serde::de::Error::custom(format!(
                "{text:?} is not a CPU list ({why}); write CPU numbers and ranges as taskset -c does, e.g. \"2-5,8\""
            ))
        })
    }
}

/// Confines the calling thread to `cpus`. Threads it creates afterwards
/// inherit the set. Needs no privilege for CPUs the process may use; the
/// kernel refuses (EINVAL) a set with none of them.
#[allow(unsafe_code)] // one libc call; no safe wrapper in std or our dependencies
pub fn set_current_thread_cpus(cpus: &CpuList) -> io::Result<()> {
    // SAFETY: an all-zero `cpu_set_t` is the empty set (CPU_ZERO).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.cpus() {
        // SAFETY: `cpu` is below MAX_CPUS (CPU_SETSIZE), the set's size.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is a live, initialised
    // `cpu_set_t` of the size passed, read during the call.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs the calling thread may run on.
#[allow(unsafe_code)] // one libc call; no safe wrapper in std or our dependencies
pub fn current_thread_cpus() -> io::Result<CpuList> {
    // SAFETY: an all-zero `cpu_set_t` is the empty set (CPU_ZERO).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is a live, writable
    // `cpu_set_t` of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: every index is below CPU_SETSIZE, the set's size.
    let cpus = (0..MAX_CPUS).filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &set) });
    CpuList::new(cpus).ok_or_else(|| io::Error::other("the kernel reported no CPU"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a fresh thread, so the test's own thread keeps its class.
    fn on_a_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("the thread ran")
    }

    #[test]
    fn a_thread_goes_back_to_normal_without_a_privilege() {
        let class = on_a_thread(|| {
            set_current_thread(Class::Normal).expect("SCHED_OTHER needs no privilege");
            current_thread().expect("readable")
        });
        assert_eq!(class, Class::Normal);
    }

    #[test]
    fn a_real_time_class_is_set_and_inherited_or_refused_with_the_os_error() {
        let result = on_a_thread(|| {
            set_current_thread(Class::Fifo(7))?;
            let own = current_thread()?;
            let child = std::thread::spawn(current_thread).join().expect("ran")?;
            set_current_thread(Class::RoundRobin(3))?;
            let rr = current_thread()?;
            set_current_thread(Class::Normal)?;
            Ok::<_, io::Error>((own, child, rr, current_thread()?))
        });
        match result {
            Ok((own, child, rr, back)) => {
                assert_eq!(own, Class::Fifo(7));
                assert_eq!(child, Class::Fifo(7), "a new thread inherits the class");
                assert_eq!(rr, Class::RoundRobin(3));
                assert_eq!(back, Class::Normal);
            }
            // Without root, CAP_SYS_NICE or RLIMIT_RTPRIO the kernel says so.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
    }

    #[test]
    fn classes_read_as_the_kernel_names_them() {
        assert_eq!(Class::Normal.to_string(), "SCHED_OTHER");
        assert_eq!(Class::Fifo(10).to_string(), "SCHED_FIFO priority 10");
        assert_eq!(Class::RoundRobin(5).to_string(), "SCHED_RR priority 5");
    }

    #[test]
    fn cpu_lists_read_and_print_as_taskset_writes_them() {
        let list: CpuList = "8, 2-5,3".parse().expect("a list");
        assert_eq!(list.cpus(), &[2, 3, 4, 5, 8]);
        assert_eq!(list.to_string(), "2-5,8");
        assert_eq!(list.len(), 5);
        let pair: CpuList = "0,1,3".parse().expect("a list");
        assert_eq!(pair.to_string(), "0,1,3");
        assert_eq!(
            "7".parse::<CpuList>().expect("one"),
            CpuList::one(7).expect("one")
        );
        assert_eq!("1023".parse::<CpuList>().expect("the last").cpus(), &[1023]);
        for (bad, why) in [
            ("", "not a CPU number"),
            ("1,,2", "not a CPU number"),
            ("a-3", "\"a\" is not a CPU number"),
            ("-1", "not a CPU number"),
            ("+1", "not a CPU number"),
            ("5-2", "runs backwards"),
            ("1024", "not below 1024"),
            ("0-5000", "not below 1024"),
        ] {
            let e = bad.parse::<CpuList>().expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let allowed: CpuList = "0-3".parse().expect("a list");
        assert_eq!(
            list.not_in(&allowed).map(|l| l.to_string()).as_deref(),
            Some("4,5,8")
        );
        assert_eq!(CpuList::one(2).expect("one").not_in(&allowed), None);
    }

    #[test]
    fn a_thread_is_confined_to_its_cpus_and_its_children_inherit_them() {
        let (own, child, back) = on_a_thread(|| {
            let allowed = current_thread_cpus().expect("readable");
            let first = CpuList::one(allowed.cpus()[0]).expect("one");
            set_current_thread_cpus(&first).expect("a CPU the process may use");
            let own = current_thread_cpus().expect("readable");
            let child = std::thread::spawn(|| current_thread_cpus().expect("readable"))
                .join()
                .expect("ran");
            set_current_thread_cpus(&allowed).expect("back to where it started");
            (
                own == first,
                child == first,
                current_thread_cpus().expect("readable") == allowed,
            )
        });
        assert!(own, "the thread runs on the one CPU it asked for");
        assert!(child, "a new thread inherits the set");
        assert!(back, "and a thread can widen its set again");
    }

    #[test]
    fn a_set_of_cpus_the_process_may_not_use_is_refused() {
        let e = on_a_thread(|| set_current_thread_cpus(&CpuList::one(MAX_CPUS - 1).expect("one")))
            .expect_err("no machine here has 1024 CPUs");
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    }
}
