//! Flapping: a host that goes down `flap_threshold` times within
//! `flap_window` is *flapping* (one event; alert sinks hold back its pages),
//! and settles after a whole window without a new `down`. Pure arithmetic
//! over six bytes per host.

/// Flapping: a host that goes down `flap_threshold` times within
/// `flap_window` is *flapping*; it settles after a whole window without a
/// new `down`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, packed(2))]
pub struct FlapState {
    /// While not flapping: when the first `down` of the current window
    /// happened; while flapping: when the latest `down` happened. In tenths
    /// of a second since the detector started (6 bytes per host in all;
    /// u32 lasts 13 years of uptime, and saturates after).
    mark_ds: u32,
    /// `down`s in the current window (saturating: a threshold above 255
    /// is reached at 255).
    pub downs: u8,
    /// Marked flapping; alert sinks hold back its alerts until it settles.
    pub flapping: bool,
}

impl FlapState {
    fn mark_ms(&self) -> u64 {
        u64::from(self.mark_ds) * 100
    }

    fn set_mark(&mut self, now_ms: u64) {
        self.mark_ds = u32::try_from(now_ms / 100).unwrap_or(u32::MAX);
    }

    /// Records a `down` at `now_ms`; true when the host starts flapping.
    pub fn on_down(&mut self, now_ms: u64, window_ms: u64, threshold: u16) -> bool {
        if self.flapping {
            self.set_mark(now_ms);
            return false;
        }
        if self.downs == 0 || now_ms.saturating_sub(self.mark_ms()) > window_ms {
            self.set_mark(now_ms);
            self.downs = 0;
        }
        self.downs = self.downs.saturating_add(1);
        if threshold > 0 && u16::from(self.downs) >= threshold.min(255) {
            self.flapping = true;
            self.set_mark(now_ms);
            self.downs = 0;
            return true;
        }
        false
    }

    /// When a flapping host settles if it has no new `down` (ms).
    pub fn settles_at(&self, window_ms: u64) -> Option<u64> {
        self.flapping
            .then(|| self.mark_ms().saturating_add(window_ms))
    }

    /// Ends flapping if a whole window passed without a `down`; true if it
    /// settled now.
    pub fn try_settle(&mut self, now_ms: u64, window_ms: u64) -> bool {
        if self.settles_at(window_ms).is_some_and(|at| now_ms >= at) {
            self.flapping = false;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flapping_after_threshold_downs_in_a_window_then_settles() {
        let mut flap = FlapState::default();
        let window = 10_000;
        assert!(!flap.on_down(0, window, 3));
        assert!(!flap.on_down(4_000, window, 3));
        assert!(flap.on_down(8_000, window, 3), "third down within 10 s");
        assert!(!flap.on_down(9_000, window, 3), "one flapping event only");
        assert!(!flap.try_settle(18_999, window));
        assert!(flap.try_settle(19_000, window));
        assert!(!flap.flapping);
        assert_eq!(std::mem::size_of::<FlapState>(), 6);
        // Downs spread wider than the window never flap.
        let mut slow = FlapState::default();
        for i in 0..10 {
            assert!(!slow.on_down(i * 6_000, window, 3));
        }
    }
}
