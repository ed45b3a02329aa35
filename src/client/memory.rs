//! Giving memory back between beats (issue 7: the client's footprint).

/// Gives back what the steady beat loop does not use: the heap's free
/// memory, and the pages of the executable that start-up (argument parsing,
/// logging set-up, config, key loading) or a rare path (a DNS lookup, an
/// error) mapped. Called after the first beat and after any beat that left
/// the steady path.
///
/// The one `lubdub` binary holds the server too, and the kernel maps a
/// binary's code 64 KiB around each page touched, so start-up alone leaves
/// about 3 MB of it mapped, nearly all of it never run again. Unmapping
/// costs nothing but a page fault for each part the loop needs again (a few
/// hundred KiB, faulted back in by the next beat); the code stays in the
/// page cache, where the kernel may now reclaim the rest. Only read-only
/// file mappings that were never written are unmapped: such a page reads
/// back exactly as it was. A relocated (copied-on-write) mapping would lose
/// its changes and is left alone. The shared libraries are left alone too:
/// their pages are the same in every process. Best effort: any failure
/// leaves all as is.
#[cfg(target_os = "linux")]
pub(super) fn release_unused_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let ranges = {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return;
        };
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return;
        };
        clean_file_mappings(&smaps, &exe.to_string_lossy())
    }; // the text is freed first, so no allocator code runs after the unmap
    for &(start, end) in ranges.iter().flatten() {
        // SAFETY: [start, end) is a whole read-only, private mapping of the
        // executable file with no private (written) pages: dropping its
        // pages only makes the next access read them from the file again.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn release_unused_memory() {}

/// Most mappings of the executable [`clean_file_mappings`] reports; a
/// binary has four or five (headers, code, read-only data, relocated and
/// writable data).
const MAX_MAPPINGS: usize = 8;

/// The address ranges in `smaps` (the text of `/proc/self/smaps`) that map
/// `path` read-only and private with no anonymous (written) pages. A fixed
/// array, not a `Vec`: freeing it would run allocator code just unmapped.
fn clean_file_mappings(smaps: &str, path: &str) -> [Option<(usize, usize)>; MAX_MAPPINGS] {
    let mut found = [None; MAX_MAPPINGS];
    let mut slots = found.iter_mut();
    let mut current = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            // A mapping's header: range perms offset dev inode path.
            let perms = fields.next().unwrap_or_default();
            let mapped = fields.nth(3).unwrap_or_default();
            let wanted = perms.starts_with('r') && !perms.contains('w') && perms.ends_with('p');
            current = (wanted && mapped == path).then_some((start, end));
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && fields.next() == Some("0")
            && let Some(slot) = slots.next()
        {
            *slot = Some(range);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::parse_server;

    #[test]
    fn only_clean_read_only_mappings_of_the_binary_are_released() {
        let smaps = "\
55d0-55e0 r--p 00000000 fe:00 42 /usr/bin/lubdub
Rss:                  64 kB
Anonymous:             0 kB
55e0-5600 r-xp 00010000 fe:00 42 /usr/bin/lubdub
Anonymous:             0 kB
5600-5610 r--p 00030000 fe:00 42 /usr/bin/lubdub
Anonymous:            16 kB
5610-5620 rw-p 00040000 fe:00 42 /usr/bin/lubdub
Anonymous:             4 kB
7f00-7f10 r-xp 00000000 fe:00 43 /usr/lib/libc.so.6
Anonymous:             0 kB
7f10-7f20 rw-p 00000000 00:00 0
Anonymous:             8 kB
";
        let found: Vec<_> = clean_file_mappings(smaps, "/usr/bin/lubdub")
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(found, [(0x55d0, 0x55e0), (0x55e0, 0x5600)]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn releasing_unused_memory_keeps_the_code_running() {
        // The real smaps of this test binary: its code is found...
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let found = clean_file_mappings(&smaps, &exe.to_string_lossy());
        assert!(found.iter().flatten().any(|&(start, end)| {
            let code = parse_server as fn(&str) -> Option<(String, u16)> as usize;
            (start..end).contains(&code)
        }));
        // ...and dropping its pages leaves it running: they fault back in.
        release_unused_memory();
        assert_eq!(parse_server("h:1"), Some(("h".to_string(), 1)));
    }
}
