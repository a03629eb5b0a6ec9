//! The kernel scheduling class of the daemon's threads.
//!
//! Owns: setting and reading one thread's policy and real-time priority
//! (`pthread_setschedparam`). What gets which class is the daemon's choice
//! (`[scheduling]` in the configuration): the signaling threads take theirs
//! at start, before the runtime exists, so every thread the daemon creates
//! inherits it; the media relay threads set their own as they start.

use std::fmt;
use std::io;

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
}
