//! Where beats go: the server list's `HOST[:PORT]` entries, their name
//! resolution (bounded in time, repeated to follow DNS changes) and the
//! client's UDP sockets, one per address family.

use crate::config::DEFAULT_PORT;
use crate::ratelimit::RateLimit;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often a failing server is logged about.
pub(super) const ERROR_LOG_PERIOD: Duration = Duration::from_secs(60);
/// Names are resolved again this often even when sending works, to follow
/// DNS changes.
const RESOLVE_EVERY: Duration = Duration::from_secs(300);
/// Longest wait for one DNS lookup, so a dead resolver cannot stall the beat
/// to the other servers for long.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a send may block (a full socket buffer), for the same reason.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// One server to beat to.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    /// `host` when it is an IP address: never resolved.
    pub(super) literal: Option<IpAddr>,
    /// Resolved addresses; beats go to the first, and a failure rotates.
    pub(super) addrs: Vec<SocketAddr>,
    /// Where the latest beat that left went: the one address probes are
    /// answered from (kept while `addrs` is cleared after an error).
    pub(super) beat_to: Option<SocketAddr>,
    pub(super) resolved_at: Option<Instant>,
    pub(super) error_log: RateLimit,
    pub(super) failing: bool,
    /// A lookup that outlived [`RESOLVE_TIMEOUT`]: its answer is awaited
    /// again next time instead of starting another, so a hung resolver
    /// costs at most one thread per server.
    pub(super) lookup: Option<mpsc::Receiver<io::Result<Vec<SocketAddr>>>>,
}

/// Splits `HOST`, `HOST:PORT`, `IPv6`, `[IPv6]` or `[IPv6]:PORT`.
pub fn parse_server(spec: &str) -> Option<(String, u16)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0);
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, DEFAULT_PORT),
            _ => (host, port(after.strip_prefix(':')?)?),
        }
    } else if spec.matches(':').count() > 1 {
        (spec, DEFAULT_PORT) // a bare IPv6 address has no port
    } else if let Some((host, p)) = spec.split_once(':') {
        (host, port(p)?)
    } else {
        (spec, DEFAULT_PORT)
    };
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_string(), port))
}

/// The client's UDP sockets, one per address family, opened on first use.
#[derive(Default)]
pub(super) struct Sockets {
    pub(super) v4: Option<UdpSocket>,
    pub(super) v6: Option<UdpSocket>,
}

/// A socket's file descriptor, to wait on.
#[cfg(unix)]
pub type Fd = std::os::fd::RawFd;
/// A socket's handle, to wait on (unused off unix).
#[cfg(not(unix))]
pub type Fd = i32;

impl Sockets {
    /// The open sockets' descriptors (a fixed array: no allocation on
    /// the beat path) and how many there are.
    pub(super) fn fds(&self) -> ([Fd; 2], usize) {
        let mut fds = [0; 2];
        let mut count = 0;
        #[cfg(unix)]
        for socket in [&self.v4, &self.v6].into_iter().flatten() {
            use std::os::fd::AsRawFd;
            fds[count] = socket.as_raw_fd();
            count += 1;
        }
        (fds, count)
    }

    fn for_addr(&mut self, to: SocketAddr) -> io::Result<&UdpSocket> {
        let (slot, local) = match to {
            SocketAddr::V4(_) => (&mut self.v4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            SocketAddr::V6(_) => (&mut self.v6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))),
        };
        if slot.is_none() {
            let socket = UdpSocket::bind(local)?;
            socket.set_write_timeout(Some(SEND_TIMEOUT))?;
            *slot = Some(socket);
        }
        Ok(slot.as_ref().expect("just opened"))
    }
}

/// One datagram already waiting on `socket`, without blocking.
pub(super) fn recv_now(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    socket.set_nonblocking(true)?;
    let received = socket.recv_from(buf);
    socket.set_nonblocking(false)?;
    received
}

/// Resolves `target` if needed and sends `payload` to its first address.
pub(super) fn send(
    target: &mut Target,
    sockets: &mut Sockets,
    payload: &[u8],
) -> io::Result<SocketAddr> {
    let literal = target.literal;
    let stale = target
        .resolved_at
        .is_none_or(|at| at.elapsed() > RESOLVE_EVERY);
    if literal.is_none() && (target.addrs.is_empty() || stale) {
        let addrs = lookup(target)?;
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "name has no addresses",
            ));
        }
        target.addrs = addrs;
        target.resolved_at = Some(Instant::now());
    } else if let Some(ip) = literal
        && target.addrs.is_empty()
    {
        target.addrs = vec![SocketAddr::new(ip, target.port)];
    }
    let to = target.addrs[0];
    let result = sockets.for_addr(to).and_then(|s| s.send_to(payload, to));
    if result.is_err() && target.addrs.len() > 1 {
        target.addrs.rotate_left(1); // try the next address next time
    }
    result.map(|_| to)
}

/// Resolves `target`'s name, waiting at most [`RESOLVE_TIMEOUT`].
/// `getaddrinfo` itself cannot be given a deadline, so it runs on a thread
/// of its own, which is left to finish (and picked up next time) when it
/// takes longer.
fn lookup(target: &mut Target) -> io::Result<Vec<SocketAddr>> {
    lookup_with(target, RESOLVE_TIMEOUT, |name| {
        name.to_socket_addrs().map(Iterator::collect)
    })
}

/// [`lookup`] with the wait and the resolver as parameters, for tests.
fn lookup_with(
    target: &mut Target,
    timeout: Duration,
    resolve: impl FnOnce((String, u16)) -> io::Result<Vec<SocketAddr>> + Send + 'static,
) -> io::Result<Vec<SocketAddr>> {
    let answer = match target.lookup.take() {
        Some(pending) => pending,
        None => {
            let (tx, rx) = mpsc::sync_channel(1);
            let name = (target.host.clone(), target.port);
            std::thread::Builder::new()
                .name("lubdub-resolve".into())
                .spawn(move || {
                    // The receiver may be gone (shutdown): nothing to tell.
                    let _ = tx.send(resolve(name));
                })?;
            rx
        }
    };
    match answer.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            target.lookup = Some(answer);
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "DNS lookup timed out",
            ))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(io::Error::other("DNS lookup ended without an answer"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_specs() {
        let ok = |spec: &str, host: &str, port: u16| {
            assert_eq!(parse_server(spec), Some((host.to_string(), port)), "{spec}");
        };
        ok("127.0.0.1", "127.0.0.1", DEFAULT_PORT);
        ok("127.0.0.1:9000", "127.0.0.1", 9000);
        ok("monitor.example.org", "monitor.example.org", DEFAULT_PORT);
        ok("monitor:1", "monitor", 1);
        ok("::1", "::1", DEFAULT_PORT);
        ok("[::1]", "::1", DEFAULT_PORT);
        ok("[2001:db8::1]:9000", "2001:db8::1", 9000);
        for bad in [
            "",
            ":9000",
            "host:",
            "host:0",
            "host:99999",
            "[::1",
            "[::1]9000",
            "a b",
        ] {
            assert_eq!(parse_server(bad), None, "{bad:?}");
        }
    }

    fn target(host: &str) -> Target {
        Target {
            host: host.into(),
            port: 9,
            literal: None,
            addrs: Vec::new(),
            beat_to: None,
            resolved_at: None,
            error_log: RateLimit::new(ERROR_LOG_PERIOD),
            failing: false,
            lookup: None,
        }
    }

    #[test]
    fn a_slow_lookup_is_waited_for_once_then_picked_up_later() {
        let mut target = target("slow.example");
        let (release, hold) = mpsc::channel::<()>();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let started = Instant::now();
        let error = lookup_with(
            &mut target,
            Duration::from_millis(50),
            move |(host, port)| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = hold.recv_timeout(Duration::from_secs(10)); // a hung resolver
                assert_eq!((host.as_str(), port), ("slow.example", 9));
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], 9))])
            },
        )
        .expect_err("gave up waiting");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(target.lookup.is_some(), "the lookup is kept");
        // The next beat waits for the same lookup instead of starting one.
        release.send(()).expect("resolver waits");
        let addrs = lookup_with(&mut target, Duration::from_secs(10), |_| {
            panic!("no second lookup while one is pending")
        })
        .expect("answer of the first lookup");
        assert_eq!(addrs, [SocketAddr::from(([127, 0, 0, 1], 9))]);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(target.lookup.is_none());
    }
}
