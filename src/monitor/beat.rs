//! Applying one beat to its host: replay refusal, sequence and loss
//! accounting, the rhythm the statistics learn, clock offset, and the
//! state transition it causes (`joined`, `recovered`, `left`, `rebooted`,
//! `settled`).

use super::model::{EventKind, HostState};
use super::registry::{Host, Slot, boot_prefix};
use super::stats::{BeatStats, SeqOutcome, track_seq};
use super::{DetectorKind, Monitor, Moved, Observation, Observed, Outcome, count_move, replay};
use std::time::{Duration, Instant, SystemTime};

/// Seq numbers carry the client's start time (Unix seconds) in their high
/// 32 bits and a beat counter in the low 32 (see docs/PROTOCOL.md): a gap
/// within one client run is loss, a change of the high half is a restart
/// (`stats::track_seq`).
const SEQ_RUN_SHIFT: u32 = 32;

impl Monitor {
    /// [`Monitor::observe`] for a beat whose host was already looked up
    /// (`found`: `registry().find(beat.host_id)`, or `None` when unknown
    /// then, which is looked up again: an earlier beat may have added it).
    /// Ingest looks up a whole batch first: the lookups' cache misses then
    /// overlap instead of queueing behind each beat's update.
    pub fn observe_found(
        &mut self,
        found: Option<Slot>,
        beat: &Observation<'_>,
        now: Instant,
        wall: SystemTime,
        out: &mut Outcome,
    ) -> Observed {
        debug_assert!(found.is_none_or(|slot| self.registry.find(beat.host_id) == Some(slot)));
        let Some(slot) = found.or_else(|| self.registry.find(beat.host_id)) else {
            if self.registry.len() >= self.settings.max_hosts {
                return Observed::HostLimit;
            }
            self.join(beat, now, wall, out);
            return Observed::Applied;
        };
        // Rounded up: deadlines count from it and must never come early.
        let now_ms = self.clock.ms_ceil(now);
        let host = self.registry.get(slot);
        let seq_check = beat
            .seq
            .map(|seq| replay::check(host.seq, host.recent_seqs, seq));
        if self.settings.enforce_seq && seq_check.is_some_and(replay::SeqCheck::is_replay) {
            return Observed::Replayed;
        }
        if !self.registry.addr_is(slot, beat.addr) {
            out.moved.push(Moved {
                host: beat.host_id.into(),
                from: self.registry.addr(slot),
                to: beat.addr,
            });
            self.registry.set_addr(slot, beat.addr);
        }
        let host = self.registry.get_mut(slot);
        let silent_for = Duration::from_millis(now_ms.saturating_sub(host.last_seen));
        let mut changes = [None, None, None];
        let boot = boot_prefix(&beat.boot_id);
        let rebooted = boot != 0 && host.boot != 0 && boot != host.boot;
        let alpha = self.settings.rules.get(host.rule).alpha;
        // Only in-order beats of a host that was beating say anything of
        // its rhythm: a gap after `down` is an outage, not jitter.
        let mut rhythm = matches!(host.state, HostState::Up | HostState::Late) && !beat.goodbye;
        // Whether the deadline may have moved earlier (see the end).
        // A changed declared interval (to 0 too) changes the timeout.
        let mut may_hasten = host.scheduled == 0
            || self.settings.rules.get(host.rule).kind != DetectorKind::Fixed
            || !host.declares(beat.interval_ms);
        if beat.seq.is_none() && host.gap_uncounted() {
            // A restored legacy host: its first silence spans the server's
            // absence, not its rhythm (v1 hosts: see the seq below).
            host.set_gap_uncounted(false);
            rhythm = false;
        }
        if beat.interval_ms > 0 && !host.declares(beat.interval_ms) {
            // A new declared rhythm: what was learnt of the old one misleads
            // (a host slowing from 10 s to 60 s beats is not 6 beats late).
            let (duplicates, reordered) = (host.stats.duplicates, host.stats.reordered);
            host.stats = BeatStats::new(beat.interval_ms as f32);
            (host.stats.duplicates, host.stats.reordered) = (duplicates, reordered);
            rhythm = false;
        }
        let mut steps = 1;
        if let (Some(seq), Some(check)) = (beat.seq, seq_check) {
            // The statistics (loss, reordering, duplicates: `stats`) ...
            if rebooted {
                host.set_gap_uncounted(false);
                rhythm = false;
            } else {
                // The statistics' reordering window is the replay window
                // below the highest seq (one bitmap serves both).
                let (mut latest, mut below) = (host.seq, (host.recent_seqs >> 1) as u32);
                match track_seq(&mut latest, &mut below, seq) {
                    // A restored host's first gap spans the server's absence
                    // (a beat overtaken on the way does not end that).
                    SeqOutcome::Next { .. } if host.gap_uncounted() => {
                        host.set_gap_uncounted(false);
                        rhythm = false;
                    }
                    SeqOutcome::Reordered if host.gap_uncounted() => rhythm = false,
                    SeqOutcome::Next { lost } => {
                        host.losses = host
                            .losses
                            .saturating_add(u32::try_from(lost).unwrap_or(u32::MAX));
                        self.totals.lost += lost;
                        host.stats.add_losses(lost, alpha);
                        steps = lost + 1;
                    }
                    SeqOutcome::Reordered => {
                        host.losses = host.losses.saturating_sub(1);
                        self.totals.lost = self.totals.lost.saturating_sub(1);
                        self.totals.reordered += 1;
                        host.stats.reordered = host.stats.reordered.saturating_add(1);
                        rhythm = false;
                    }
                    SeqOutcome::Duplicate => {
                        host.stats.duplicates = host.stats.duplicates.saturating_add(1);
                        self.totals.duplicates += 1;
                        rhythm = false;
                    }
                    SeqOutcome::NewRun => {
                        host.set_gap_uncounted(false);
                        rhythm = false;
                    }
                }
            }
            // ... and the replay window (`replay`), which also feeds the
            // API's beat history.
            let same_run = seq >> SEQ_RUN_SHIFT == host.seq >> SEQ_RUN_SHIFT;
            match check {
                replay::SeqCheck::Newer { .. } | replay::SeqCheck::Reordered => {
                    replay::record(&mut host.seq, &mut host.recent_seqs, seq);
                }
                // Only reached without enforcement: a new run that numbers
                // lower (the client's clock went back) starts afresh.
                _ if rebooted || !same_run => {
                    replay::restart(&mut host.seq, &mut host.recent_seqs, seq);
                }
                _ => {}
            }
        }
        if rhythm && beat.seq.is_none() {
            // Legacy beats carry no sequence: loss is invisible, and the
            // rhythm (gaps included) must carry it, as in classic phi.
            host.stats.add_losses(0, alpha);
        }
        if rhythm {
            host.stats
                .add_interval(silent_for.as_secs_f32() * 1000.0, steps, alpha);
        }
        if beat.sent_at_micros != 0 {
            let received = wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| {
                d.as_secs() * 1_000_000 + u64::from(d.subsec_micros())
            });
            // In f64: exact for any plausible pair of times, and no 128-bit
            // arithmetic on the per-beat path.
            let offset_ms = (received as f64 - beat.sent_at_micros as f64) / 1000.0;
            host.stats.add_clock_offset(offset_ms as f32, alpha);
        }
        host.boot = boot;
        host.set_interval_ms(beat.interval_ms);
        host.last_seen = host.last_seen.max(now_ms);
        host.beats = host.beats.saturating_add(1);
        let next_state = if beat.goodbye {
            HostState::Left
        } else {
            HostState::Up
        };
        changes[0] = match (host.state, next_state) {
            // Paused by an operator: beats are recorded, the state is kept.
            (HostState::Paused, _) => None,
            (HostState::Left, HostState::Up) => Some(EventKind::Joined),
            (HostState::Late | HostState::Down, HostState::Up) => Some(EventKind::Recovered),
            (state, HostState::Left) if state != HostState::Left => Some(EventKind::Left),
            _ => None,
        };
        if rebooted {
            changes[1] = Some(EventKind::Rebooted);
        }
        let flap_ms = super::millis(now.saturating_duration_since(self.epoch), false);
        let window_ms = super::millis(self.settings.flap_window, false);
        if host.flap.try_settle(flap_ms, window_ms) {
            changes[2] = Some(EventKind::Settled);
            self.totals.flapping = self.totals.flapping.saturating_sub(1);
        }
        if changes[0].is_some() {
            count_move(&mut self.counts, host.state, next_state);
            host.state = next_state;
            host.set_since(wall);
            may_hasten = true;
        }
        if changes.iter().any(Option::is_some) {
            self.changes.mark(slot);
        } else {
            self.changes.mark_beaten(slot);
        }
        for kind in changes.into_iter().flatten() {
            out.events.push(self.event(kind, slot, wall, silent_for));
        }
        // The common beat (same state, same declared interval, fixed
        // timeout) only moves the deadline later: the queued entry stays,
        // early, and is moved when it surfaces. Skipping the computation
        // keeps the beat cheap.
        if may_hasten {
            self.reschedule_if_earlier(slot);
        }
        Observed::Applied
    }

    /// Adds a host not known yet, from its first beat.
    fn join(&mut self, beat: &Observation<'_>, now: Instant, wall: SystemTime, out: &mut Outcome) {
        let state = if beat.goodbye {
            HostState::Left
        } else {
            HostState::Up
        };
        let mut host = Host::new(
            state,
            wall,
            self.clock.ms_ceil(now),
            self.fresh_stats(beat.interval_ms),
        );
        host.seq = beat.seq.unwrap_or(0);
        host.recent_seqs = u64::from(beat.seq.is_some());
        host.boot = boot_prefix(&beat.boot_id);
        host.set_interval_ms(beat.interval_ms);
        host.beats = 1;
        host.set_legacy(beat.seq.is_none());
        host.rule = self.settings.rules.index_for(beat.host_id);
        self.counts[state.index()] += 1;
        let slot = self.registry.insert(host, beat.host_id, beat.addr);
        let kind = if beat.goodbye {
            EventKind::Left
        } else {
            EventKind::Joined
        };
        out.events
            .push(self.event(kind, slot, wall, Duration::ZERO));
        self.changes.mark(slot);
        self.reschedule_if_earlier(slot);
    }
}
