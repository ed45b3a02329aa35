//! Waiting between beats for the time, a signal, or a datagram, on the
//! client's one thread.

use super::{Fd, Wake};
use std::io;
use std::time::{Duration, Instant};

/// SIGINT and SIGTERM, taken synchronously: the client's one thread sleeps
/// in `sigtimedwait` between beats, so a signal ends the sleep at once,
/// with no handler, self-pipe or runtime thread to keep resident.
#[cfg(unix)]
pub struct StopSignals {
    set: libc::sigset_t,
    /// The same signals as a descriptor (Linux), so the loop can wait on
    /// them and its sockets together.
    #[cfg(target_os = "linux")]
    signal_fd: Option<std::os::fd::OwnedFd>,
}

#[cfg(unix)]
impl StopSignals {
    /// Blocks SIGINT and SIGTERM in this thread, and so in every thread it
    /// starts afterwards: call it before starting any. From then on they
    /// wait, pending, for [`StopSignals::wait`].
    pub fn block() -> io::Result<Self> {
        // SAFETY: plain libc calls on a local, initialized sigset_t.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            // A reload, not an end: a closed terminal must not stop the
            // beats (nor end them without a goodbye).
            libc::sigaddset(&mut set, libc::SIGHUP);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            #[cfg(target_os = "linux")]
            let signal_fd = {
                use std::os::fd::FromRawFd;
                let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
                (fd >= 0).then(|| std::os::fd::OwnedFd::from_raw_fd(fd))
            };
            Ok(Self {
                set,
                #[cfg(target_os = "linux")]
                signal_fd,
            })
        }
    }

    /// True when [`StopSignals::wait_on`] also wakes for sockets.
    pub fn can_wait_on_sockets(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.signal_fd.is_some();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// [`StopSignals::wait`], but also ends with [`Wake::Readable`] when a
    /// datagram waits on one of `sockets` (Linux: `poll` on them and a
    /// signalfd; elsewhere the sockets are not watched).
    pub fn wait_on(&self, timeout: Duration, sockets: &[Fd]) -> Wake {
        #[cfg(target_os = "linux")]
        if let Some(signal_fd) = &self.signal_fd
            && !sockets.is_empty()
        {
            use std::os::fd::AsRawFd;
            let deadline = Instant::now() + timeout;
            let mut polled = [libc::pollfd {
                fd: signal_fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }; 3];
            for (entry, &fd) in polled[1..].iter_mut().zip(sockets) {
                entry.fd = fd;
            }
            let count = 1 + sockets.len().min(2);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                // Rounded up: waking a moment early would only wait again.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                // SAFETY: `polled` holds `count` initialized entries.
                let ready = unsafe { libc::poll(polled.as_mut_ptr(), count as libc::nfds_t, ms) };
                if ready < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return self.wait(left); // poll itself failed: signals only
                }
                if polled[0].revents != 0 {
                    // A signal is pending: take it the usual way, at once.
                    return match self.wait(Duration::ZERO) {
                        Wake::Beat => continue, // consumed elsewhere meanwhile
                        wake => wake,
                    };
                }
                if polled[1..count].iter().any(|p| p.revents != 0) {
                    return Wake::Readable;
                }
                if ready == 0 && left.is_zero() || Instant::now() >= deadline {
                    return Wake::Beat;
                }
            }
        }
        let _ = sockets;
        self.wait(timeout)
    }

    /// Sleeps up to `timeout`: [`Wake::Stop`] when SIGINT or SIGTERM came
    /// (then a second one ends the process at once with status 130, for
    /// when the goodbye itself hangs, e.g. on DNS), [`Wake::Reload`] on
    /// SIGHUP, else [`Wake::Beat`].
    pub fn wait(&self, timeout: Duration) -> Wake {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = libc::timespec {
                tv_sec: left.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                tv_nsec: left.subsec_nanos().into(),
            };
            // SAFETY: `set` was initialized in `block`; a null siginfo is allowed.
            let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
            if signal == libc::SIGHUP {
                return Wake::Reload;
            }
            if signal > 0 {
                tracing::info!("shutting down (signal again to exit at once)");
                self.exit_on_next();
                return Wake::Stop;
            }
            // EAGAIN: the time is up. EINTR (another signal, a stop and
            // continue): sleep on until the deadline.
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Wake::Beat;
            }
        }
    }

    /// Makes the next SIGINT/SIGTERM exit the process with status 130.
    fn exit_on_next(&self) {
        extern "C" fn exit_now(_: libc::c_int) {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(130) }
        }
        // SAFETY: installs a handler that only calls _exit, then unblocks.
        // SIGHUP stays blocked: a closed terminal must not cut the goodbye.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = exit_now as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            for signal in [libc::SIGINT, libc::SIGTERM] {
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}
