//! Batched datagram receive: one `recvmmsg(2)` system call returns up to
//! [`BATCH`] datagrams on Linux; elsewhere a loop of `recv_from` fills the
//! same batch. The buffers are allocated once and reused forever.
//!
//! On Linux the kernel can also stamp each datagram with the time it
//! reached the socket (`SO_TIMESTAMPNS`, see [`stamp_arrivals`]), so that a
//! beat's time does not include how long it waited in the socket while the
//! receive thread paused, was descheduled or waited for the lock.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Datagrams per receive call. 64 amortises the system call well; more
/// mostly adds cache pressure.
pub const BATCH: usize = 64;
/// Receive buffer per datagram: larger than any valid packet, so a longer
/// datagram shows up as truncated and is rejected.
pub const BUF_LEN: usize = 512;
/// A kernel arrival stamp older than this is not trusted (the wall clock
/// was stepped between the arrival and its reading): the batch is stamped
/// with the clock instead.
const MAX_STAMP_AGE: Duration = Duration::from_secs(1);

/// Room for one datagram's control messages: its arrival stamp (32 bytes
/// with the header), aligned as `cmsghdr` needs.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 64]);

/// Reusable buffers for one batch of datagrams.
pub struct Batch {
    bufs: Box<[[u8; BUF_LEN]; BATCH]>,
    lens: [usize; BATCH],
    truncated: [bool; BATCH],
    addrs: [SocketAddr; BATCH],
    count: usize,
    /// The newest kernel arrival stamp of the last receive, if any.
    arrived: Option<SystemTime>,
    #[cfg(target_os = "linux")]
    control: Box<[Control; BATCH]>,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            bufs: Box::new([[0; BUF_LEN]; BATCH]),
            lens: [0; BATCH],
            truncated: [false; BATCH],
            addrs: [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
            count: 0,
            arrived: None,
            #[cfg(target_os = "linux")]
            control: Box::new([Control([0; 64]); BATCH]),
        }
    }
}

/// An IPv4 sender on a dual-stack socket shows up as `::ffff:a.b.c.d`;
/// it is shown, keyed and matched against networks as plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// One received datagram.
pub struct Datagram<'a> {
    /// Its bytes (cut at [`BUF_LEN`] if it was longer).
    pub bytes: &'a [u8],
    /// Where it came from.
    pub from: SocketAddr,
    /// True if it was longer than [`BUF_LEN`].
    pub truncated: bool,
}

impl Batch {
    /// The datagrams of the last successful receive.
    pub fn iter(&self) -> impl Iterator<Item = Datagram<'_>> {
        (0..self.count).map(|i| Datagram {
            bytes: &self.bufs[i][..self.lens[i].min(BUF_LEN)],
            from: self.addrs[i],
            truncated: self.truncated[i],
        })
    }

    /// How many datagrams the last receive returned.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the last receive returned nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// When the last batch arrived, as (monotonic, wall-clock) time: the
    /// kernel's stamp of its newest datagram when the socket has them
    /// ([`stamp_arrivals`]), else the clock now. The newest, so that no
    /// beat of the batch is stamped before it arrived: a deadline computed
    /// from it is never early, and late by at most the batch's spread.
    pub fn arrival(&self) -> (Instant, SystemTime) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let age = self
            .arrived
            .and_then(|at| wall.duration_since(at).ok())
            .filter(|age| *age <= MAX_STAMP_AGE);
        match age.and_then(|age| Some((now.checked_sub(age)?, wall.checked_sub(age)?))) {
            Some(stamped) => stamped,
            None => (now, wall),
        }
    }

    /// Receives up to [`BATCH`] datagrams from a non-blocking socket without
    /// waiting; `WouldBlock` when none is queued.
    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, socket: &impl std::os::fd::AsRawFd) -> io::Result<usize> {
        self.recvmmsg(socket.as_raw_fd(), libc::MSG_DONTWAIT)
    }

    /// Waits for a datagram on a blocking socket (at most its read timeout,
    /// then `WouldBlock` or `TimedOut`), then takes what else is already
    /// queued, up to [`BATCH`], without waiting for more. Once the socket's
    /// reading side is shut down it returns at once, with an empty
    /// "datagram" (the end-of-file read) or none: the caller checks its
    /// stop flag before using the batch.
    #[cfg(target_os = "linux")]
    pub fn recv_wait(&mut self, socket: &std::net::UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        self.recvmmsg(socket.as_raw_fd(), libc::MSG_WAITFORONE)
    }

    /// One `recvmmsg(2)` into the batch with the given flags.
    #[cfg(target_os = "linux")]
    fn recvmmsg(&mut self, fd: std::os::fd::RawFd, flags: libc::c_int) -> io::Result<usize> {
        use std::mem::{MaybeUninit, zeroed};
        let mut names: [socket2::SockAddrStorage; BATCH] =
            std::array::from_fn(|_| socket2::SockAddrStorage::zeroed());
        let mut iovecs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
        // SAFETY: all-zero is a valid value for this plain C struct.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            let iov = iovecs[i].write(libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: BUF_LEN,
            });
            let hdr = &mut headers[i].msg_hdr;
            hdr.msg_name = (&raw mut names[i]).cast();
            hdr.msg_namelen = names[i].size_of();
            hdr.msg_iov = iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.control[i].0.as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of::<Control>() as _;
        }
        // SAFETY: every header points at a buffer, name and iovec that live
        // until the call returns; the kernel writes at most the given lengths.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        self.arrived = None;
        if received < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = received as usize;
        for i in 0..self.count {
            let hdr = &headers[i];
            self.arrived = self.arrived.max(arrival_stamp(&hdr.msg_hdr));
            self.lens[i] = hdr.msg_len as usize;
            self.truncated[i] = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // SAFETY: the kernel filled `names[i]` with `msg_namelen` bytes.
            let addr = unsafe {
                socket2::SockAddr::new(
                    std::mem::replace(&mut names[i], socket2::SockAddrStorage::zeroed()),
                    hdr.msg_hdr.msg_namelen,
                )
            };
            self.addrs[i] = canonical(
                addr.as_socket()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            );
        }
        Ok(self.count)
    }

    /// Receives up to [`BATCH`] datagrams from a non-blocking socket without
    /// waiting; `WouldBlock` when none is queued.
    #[cfg(not(target_os = "linux"))]
    pub fn recv(&mut self, socket: &std::net::UdpSocket) -> io::Result<usize> {
        self.count = 0;
        self.recv_one(socket)?;
        self.recv_more(socket);
        Ok(self.count)
    }

    /// Receives one datagram into the next slot of the batch.
    #[cfg(not(target_os = "linux"))]
    fn recv_one(&mut self, socket: &std::net::UdpSocket) -> io::Result<()> {
        let i = self.count;
        let (len, from) = socket.recv_from(&mut self.bufs[i])?;
        self.lens[i] = len;
        self.truncated[i] = false;
        self.addrs[i] = canonical(from);
        self.count += 1;
        Ok(())
    }

    /// Waits for a datagram on a blocking socket (at most its read timeout),
    /// then takes what else is already queued, up to [`BATCH`]. Without
    /// `recvmmsg`, the rest is read with the socket made non-blocking for a
    /// moment: two more system calls a batch.
    #[cfg(not(target_os = "linux"))]
    pub fn recv_wait(&mut self, socket: &std::net::UdpSocket) -> io::Result<usize> {
        self.count = 0;
        self.recv_one(socket)?;
        socket.set_nonblocking(true)?;
        self.recv_more(socket);
        socket.set_nonblocking(false)?;
        Ok(self.count)
    }

    /// Takes queued datagrams until none is left or the batch is full. An
    /// error ends the batch early (keeping what it holds); the next
    /// receive reports it.
    #[cfg(not(target_os = "linux"))]
    fn recv_more(&mut self, socket: &std::net::UdpSocket) {
        while self.count < BATCH && self.recv_one(socket).is_ok() {}
    }
}

/// Sets `socket`'s receive buffer to `bytes` as the kernel counts it (it
/// charges a queued datagram its whole allocation, about 800 bytes for a
/// beat on loopback, so 32 MiB holds some 40,000 beats: 0.4 s at 100,000
/// beats/s). `SO_RCVBUF` is capped at twice `net.core.rmem_max`; with
/// `CAP_NET_ADMIN` (root), `SO_RCVBUFFORCE` is not, and is tried first.
/// Returns the size the kernel granted, which may be less than asked.
pub fn set_receive_buffer(socket: &socket2::Socket, bytes: usize) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        // The kernel doubles the value it is given (for its bookkeeping).
        let value = libc::c_int::try_from(bytes / 2).unwrap_or(libc::c_int::MAX);
        if set_socket_int(socket, libc::SO_RCVBUFFORCE, value).is_err() {
            socket.set_recv_buffer_size(bytes / 2)?;
        }
    }
    #[cfg(not(target_os = "linux"))]
    socket.set_recv_buffer_size(bytes)?;
    socket.recv_buffer_size()
}

/// Asks the kernel to stamp every datagram with the time it reached
/// `socket` (`SO_TIMESTAMPNS`); [`Batch::arrival`] then uses those stamps.
/// Without them (an error, or not Linux) batches are stamped when received;
/// so are the first datagrams after this call, until the kernel has
/// switched stamping on (it does so lazily).
#[cfg(target_os = "linux")]
pub fn stamp_arrivals(socket: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    set_socket_int(socket, libc::SO_TIMESTAMPNS, 1)
}

/// Sets the `SOL_SOCKET` option `name` of `socket` to `value` (the options
/// socket2 has no setter for).
#[cfg(target_os = "linux")]
fn set_socket_int(
    socket: &impl std::os::fd::AsRawFd,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads one c_int from a live local.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Without `SO_TIMESTAMPNS`, batches are stamped when received.
#[cfg(not(target_os = "linux"))]
pub fn stamp_arrivals<T>(_socket: &T) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// The `SCM_TIMESTAMPNS` arrival stamp among a received message's control
/// messages, if there is one.
#[cfg(target_os = "linux")]
fn arrival_stamp(hdr: &libc::msghdr) -> Option<SystemTime> {
    // SAFETY: the kernel wrote `msg_controllen` bytes of well-formed control
    // messages into the buffer `hdr` points at; the CMSG_* functions stay
    // within that length, and the payload is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let secs = u64::try_from(ts.tv_sec).ok()?;
                let nanos = u32::try_from(ts.tv_nsec).ok()?;
                return SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn receives_a_batch_with_sources_and_truncation() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut batch = Batch::default();
        assert_eq!(
            batch.recv(&rx).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        tx.send_to(b"one", to).expect("send");
        tx.send_to(b"two", to).expect("send");
        tx.send_to(&[7u8; BUF_LEN + 10], to).expect("send");
        let got = batch.recv(&rx).expect("receive");
        assert_eq!(got, 3);
        let datagrams: Vec<_> = batch
            .iter()
            .map(|d| (d.bytes.to_vec(), d.from, d.truncated))
            .collect();
        let from = tx.local_addr().expect("addr");
        assert_eq!(datagrams[0], (b"one".to_vec(), from, false));
        assert_eq!(datagrams[1], (b"two".to_vec(), from, false));
        assert!(datagrams[2].2, "oversized datagram is flagged");
    }

    #[test]
    fn blocking_receive_takes_what_is_queued_and_ends_on_shutdown() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        // Long enough that a timeout cannot pass for the shutdown's wake-up.
        rx.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        for payload in [&b"one"[..], b"two", b"three"] {
            tx.send_to(payload, to).expect("send");
        }
        let mut batch = Batch::default();
        // Loopback delivers before send_to returns: all three are queued.
        assert_eq!(batch.recv_wait(&rx).expect("receive"), 3);
        let bytes: Vec<&[u8]> = batch.iter().map(|d| d.bytes).collect();
        assert_eq!(bytes, [&b"one"[..], b"two", b"three"]);

        let interrupt = rx.try_clone().expect("clone");
        let waiter = std::thread::spawn(move || {
            let mut batch = Batch::default();
            batch.recv_wait(&rx).map_err(|e| e.kind())
        });
        // Whether the waiter is already blocked or not yet, it sees the
        // shutdown: the receive returns at once (an end-of-file read, no
        // datagram), not with the timeout's `WouldBlock` 30 s later.
        socket2::SockRef::from(&interrupt)
            .shutdown(std::net::Shutdown::Read)
            .ok();
        let woken = waiter.join().expect("waiter");
        assert!(matches!(woken, Ok(0 | 1)), "{woken:?}");
    }

    #[test]
    fn receive_buffer_is_set_as_the_kernel_counts_it() {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("udp socket");
        let small = 256 << 10; // below every default rmem_max
        assert_eq!(set_receive_buffer(&socket, small).expect("set"), small);
    }

    #[test]
    fn a_batch_is_stamped_when_it_arrived_not_when_it_was_read() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        stamp_arrivals(&rx).expect("SO_TIMESTAMPNS");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut batch = Batch::default();
        assert!(
            batch.arrival().1 <= SystemTime::now(),
            "nothing received: now"
        );
        let wait = Duration::from_millis(50);
        // The kernel switches receive stamping on lazily (a deferred static
        // key), and until then stamps a datagram when it is read: a few
        // tries, bounded, until one carries its arrival time.
        let mut stamped = false;
        for _ in 0..20 {
            let before = SystemTime::now();
            tx.send_to(b"beat", rx.local_addr().expect("addr"))
                .expect("send");
            // The datagram waits in the socket (delivered before send_to
            // returned); its stamp must not include the wait.
            std::thread::sleep(wait);
            assert_eq!(batch.recv_wait(&rx).expect("receive"), 1);
            let (at, wall) = batch.arrival();
            assert!(wall >= before, "not before it was sent");
            if wall <= SystemTime::now() - wait {
                assert!(at <= Instant::now() - wait, "monotonic time agrees");
                stamped = true;
                break;
            }
        }
        assert!(stamped, "the wait in the socket is not counted");
        // A plain socket has no stamps: the clock stands in.
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.send_to(b"beat", plain.local_addr().expect("addr"))
            .expect("send");
        std::thread::sleep(wait);
        let read = SystemTime::now();
        assert_eq!(batch.recv_wait(&plain).expect("receive"), 1);
        assert!(batch.arrival().1 >= read);
    }

    #[test]
    fn ipv4_senders_on_a_dual_stack_socket_are_plain_ipv4() {
        let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)
            .expect("ipv6 socket");
        socket.set_only_v6(false).expect("dual-stack");
        socket
            .bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)).into())
            .expect("bind [::]:0");
        socket.set_nonblocking(true).expect("nonblocking");
        let rx: std::net::UdpSocket = socket.into();
        let port = rx.local_addr().expect("addr").port();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.send_to(b"Thump!", ("127.0.0.1", port)).expect("send");
        let mut batch = Batch::default();
        let mut received = 0;
        for _ in 0..200 {
            match batch.recv(&rx) {
                Ok(n) => {
                    received = n;
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert_eq!(received, 1);
        let from = batch.iter().next().expect("one datagram").from;
        assert_eq!(from, tx.local_addr().expect("addr"), "not ::ffff:127.0.0.1");
    }
}
