//! Reading a store without writing to it: a redb storage backend that reads
//! the file and keeps every write in memory. Opening the store through it
//! runs redb's whole open path (including the repair after a `kill -9`,
//! which writes) and reading every record through it finds a corrupt page,
//! while the file on disk stays byte for byte as it was. Only a store that
//! passed this is opened for writing.

use redb::StorageBackend;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// Bytes per block of the in-memory overlay.
const BLOCK: u64 = 4096;

/// The file, read only, under an in-memory overlay of what redb wrote.
#[derive(Debug)]
pub struct DryRun {
    file: File,
    state: Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    /// The length redb set (the file's own, until it sets one).
    len: u64,
    /// Blocks written, by index; a written block holds its whole content.
    blocks: BTreeMap<u64, Box<[u8]>>,
}

impl DryRun {
    /// Reads `file` (opened read-only by the caller) and writes nothing to it.
    pub fn new(file: File) -> io::Result<DryRun> {
        let len = file.metadata()?.len();
        Ok(DryRun {
            file,
            state: Mutex::new(Overlay {
                len,
                blocks: BTreeMap::new(),
            }),
        })
    }
}

impl Overlay {
    /// Block `index` as it stands: written, else from the file (zeros past
    /// its end or past the length redb set).
    fn block(&self, file: &File, index: u64) -> io::Result<Box<[u8]>> {
        if let Some(block) = self.blocks.get(&index) {
            return Ok(block.clone());
        }
        let mut block = vec![0; BLOCK as usize].into_boxed_slice();
        let start = index * BLOCK;
        let end = (start + BLOCK).min(self.len);
        let mut done = 0usize;
        while start + (done as u64) < end {
            let want = (end - start) as usize;
            let n = file.read_at(&mut block[done..want], start + done as u64)?;
            if n == 0 {
                break; // past the file's end: zeros, as a grown file reads
            }
            done += n;
        }
        Ok(block)
    }
}

impl StorageBackend for DryRun {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().expect("overlay lock").len)
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let state = self.state.lock().expect("overlay lock");
        let end = offset
            .checked_add(len as u64)
            .filter(|&end| end <= state.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while at < end {
            let block = state.block(&self.file, at / BLOCK)?;
            let from = (at % BLOCK) as usize;
            let to = ((end - at) as usize + from).min(BLOCK as usize);
            out.extend_from_slice(&block[from..to]);
            at += (to - from) as u64;
        }
        Ok(out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock().expect("overlay lock");
        if len < state.len {
            // Bytes past the new end must read as zeros if it grows again.
            let first_cut = len / BLOCK;
            let partial = len % BLOCK != 0;
            let mut keep = if partial {
                Some(state.block(&self.file, first_cut)?)
            } else {
                None
            };
            state.blocks.retain(|&i, _| i < first_cut);
            if let Some(block) = keep.as_mut() {
                block[(len % BLOCK) as usize..].fill(0);
            }
            // Blocks of the file past the cut read as zeros from now on.
            let old_blocks = state.len.div_ceil(BLOCK);
            for i in first_cut..old_blocks {
                state
                    .blocks
                    .insert(i, vec![0; BLOCK as usize].into_boxed_slice());
            }
            if let Some(block) = keep {
                state.blocks.insert(first_cut, block);
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().expect("overlay lock");
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / BLOCK;
            let mut block = state.block(&self.file, index)?;
            let from = (at % BLOCK) as usize;
            let n = rest.len().min(BLOCK as usize - from);
            block[from..from + n].copy_from_slice(&rest[..n]);
            state.blocks.insert(index, block);
            rest = &rest[n..];
            at += n as u64;
        }
        state.len = state.len.max(at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_read_back_and_never_reach_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let original: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &original).expect("write");
        let dry = DryRun::new(File::open(&path).expect("open")).expect("dry run");
        assert_eq!(dry.read(4090, 10).expect("read"), &original[4090..4100]);
        dry.write(4094, b"abcdef").expect("write");
        assert_eq!(dry.read(4092, 8).expect("read"), b"\xfc\xfdabcdef");
        dry.write(9_998, b"xyz").expect("write past the end");
        assert_eq!(dry.len().expect("len"), 10_001);
        dry.set_len(5000).expect("shrink");
        dry.set_len(9000).expect("grow");
        assert_eq!(dry.read(4999, 2).expect("read"), [original[4999], 0]);
        assert_eq!(dry.read(8990, 10).expect("read"), [0; 10]);
        assert!(dry.read(8995, 10).is_err(), "past the end");
        assert_eq!(std::fs::read(&path).expect("read"), original, "untouched");
    }
}
