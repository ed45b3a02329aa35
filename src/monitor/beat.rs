//! Applying one beat to its host: replay refusal, sequence and loss
//! accounting, the rhythm the statistics learn, clock offset, and the
//! state transition it causes (`joined`, `recovered`, `left`, `rebooted`,
//! `settled`).

use super::model::{EventKind, HostState};
use super::probe::AnswerCheck;
use super::registry::{Host, Slot, boot_prefix};
use super::stats::{BeatStats, MAX_BURST_GAP, SeqOutcome, track_seq};
use super::{DetectorKind, Monitor, Moved, Observation, Observed, Outcome, replay};
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
        // With keys, an unsigned `Thump!` (admitted from a legacy network)
        // speaks only for a host known from `Thump!` alone: never for one
        // that ever signed, which it would keep up around the MAC and the
        // window (issue 13).
        if self.settings.enforce_seq && beat.seq.is_none() && !host.legacy() {
            return Observed::NotLegacy;
        }
        // An answer to a probe this host was not sent during its current
        // suspicion (forged or replayed) is refused. One that comes after
        // its suspicion ended (the host recovered, went down or was never
        // suspected) confirms nothing but is still a beat: it proves the
        // host alive like any other (issue 15).
        if let Some(nonce) = beat.answers
            && self.check_answer(slot, nonce, now_ms, out) == AnswerCheck::Refused
        {
            return Observed::BadAnswer;
        }
        // With keys a seq is authentic, so one below the newest is a beat
        // overtaken or withheld on the way: it is counted (statistics, the
        // window) but says nothing of now, so it changes no state, no
        // deadline, no address (issue 13). Nothing older than a goodbye
        // revives the host. Without keys a seq proves nothing (a forged
        // high one would silence the real host), so beats count as they come.
        let stale = self.settings.enforce_seq && seq_check == Some(replay::SeqCheck::Reordered);
        let moved = !stale && !self.registry.addr_is(slot, beat.addr);
        if moved {
            out.moved.push(Moved {
                host: beat.host_id.into(),
                from: self.registry.addr(slot),
                to: beat.addr,
            });
            self.registry.set_addr(slot, beat.addr);
            self.relabel_moved(slot);
        }
        let at_least = self.unheard_since_restore(self.registry.get(slot).last_seen, now_ms);
        // In maintenance: does this beat say the host is back?
        let in_window = self.registry.get(slot).state == HostState::Maintenance;
        let back = in_window
            && !stale
            && !beat.goodbye
            && self.back_from_maintenance(slot, beat.seq, boot_prefix(&beat.boot_id), now_ms);
        if in_window && beat.goodbye && !stale {
            // A goodbye ends its part in the window: it is `left`, as
            // outside one (see `maintenance`).
            self.maintenance.leave(slot);
        }
        let host = self.registry.get_mut(slot);
        let silent_for = Duration::from_millis(now_ms.saturating_sub(host.last_seen));
        let mut changes = [None, None, None];
        let boot = boot_prefix(&beat.boot_id);
        let rebooted = !stale && boot != 0 && host.boot != 0 && boot != host.boot;
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
        if !stale && beat.interval_ms > 0 && !host.declares(beat.interval_ms) {
            // A new declared rhythm: what was learnt of the old one misleads
            // (a host slowing from 10 s to 60 s beats is not 6 beats late).
            let (duplicates, reordered) = (host.stats.duplicates, host.stats.reordered);
            host.stats = BeatStats::new(beat.interval_ms as f32);
            (host.stats.duplicates, host.stats.reordered) = (duplicates, reordered);
            rhythm = false;
        }
        let mut steps = 1;
        if let (Some(seq), Some(check)) = (beat.seq, seq_check) {
            // It signs (or at least numbers) its beats now: no longer a
            // legacy host, and no `Thump!` speaks for it any more.
            host.set_legacy(false);
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
                        // A burst of a watched host; not an outage, a
                        // pause or a maintenance window ending. Against
                        // the loss rate before it (the run's own start
                        // would lower its excess).
                        let watched = matches!(host.state, HostState::Up | HostState::Late);
                        if lost > 0 && lost <= MAX_BURST_GAP && watched {
                            self.fleet_loss.observe(lost, &host.stats);
                        }
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
        if stale {
            host.beats = host.beats.saturating_add(1);
            self.changes.mark_beaten(slot);
            return Observed::Applied;
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
        host.set_answers_probes(beat.answers_probes);
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
            // A host in maintenance that is back ends its window early;
            // until then its beats keep it in maintenance (a goodbye: below).
            (HostState::Maintenance, HostState::Up) if back => Some(EventKind::MaintenanceEnded),
            (HostState::Maintenance, HostState::Up) => None,
            (HostState::Left, HostState::Up) => Some(EventKind::Joined),
            (HostState::Late | HostState::Down | HostState::Unreachable, HostState::Up) => {
                Some(EventKind::Recovered)
            }
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
        let from = host.state;
        if changes[0].is_some() {
            host.state = next_state;
            host.set_since(wall);
            may_hasten = true;
        }
        if changes.iter().any(Option::is_some) {
            self.changes.mark(slot);
        } else {
            self.changes.mark_beaten(slot);
        }
        if changes[0].is_some() {
            self.transition(slot, from, next_state, now_ms, wall);
        }
        if moved && self.topo.uses_networks {
            self.retie(slot, now, wall);
        }
        let note = if back { self.returned(slot) } else { None };
        for kind in changes.into_iter().flatten() {
            let mut event = self.bounded_event(kind, slot, wall, silent_for, at_least);
            if kind == EventKind::MaintenanceEnded {
                event.maintenance = note.clone();
            }
            out.events.push(event);
        }
        if changes[0].is_some() {
            if from == HostState::Late && next_state == HostState::Up {
                self.suspicion_survived(slot);
            }
            self.end_probing(slot); // recovered or left: no more probes
        }
        self.take_knock_on(out);
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
        host.set_answers_probes(beat.answers_probes);
        host.rule = self.settings.rules.index_for(beat.host_id);
        self.counts[state.index()] += 1;
        let slot = self.registry.insert(host, beat.host_id, beat.addr);
        if !self.label_rules.is_empty() {
            self.relabel(slot); // e.g. a network rule: a legacy host has labels too
        }
        let kind = if beat.goodbye {
            EventKind::Left
        } else {
            EventKind::Joined
        };
        self.tie(slot, true, self.clock.ms_ceil(now), wall);
        out.events
            .push(self.event(kind, slot, wall, Duration::ZERO));
        self.take_knock_on(out);
        self.changes.mark(slot);
        self.reschedule_if_earlier(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Sim, beat, one, settings};
    use super::super::{EventKind, HostState, Observation, Observed, Outcome, Settings};
    use std::net::SocketAddr;
    use std::time::SystemTime;

    const RUN: u64 = 1_700_000_000 << 32;

    fn keyed() -> Sim {
        Sim::with(Settings {
            enforce_seq: true,
            ..settings()
        })
    }

    /// Beat `n` of host `a`'s client run.
    fn nth(n: u64) -> Observation<'static> {
        Observation {
            seq: Some(RUN + n),
            ..beat("a")
        }
    }

    /// Applies `beat` at `secs`; what the monitor did with it.
    fn apply(sim: &mut Sim, secs: f64, beat: Observation<'_>) -> Observed {
        let at = sim.at(secs);
        sim.monitor
            .observe(&beat, at, SystemTime::now(), &mut Outcome::default())
    }

    // See: issue 13, item 3.
    #[test]
    fn with_keys_a_beat_older_than_the_newest_moves_no_state_and_no_deadline() {
        let mut sim = keyed();
        sim.observe(0.0, nth(1));
        sim.observe(10.0, nth(3));
        // Beat 2, withheld and released at 20 s from elsewhere, claiming
        // another rhythm and boot: counted, and nothing else.
        let withheld = Observation {
            addr: SocketAddr::from(([192, 0, 2, 9], 9)),
            interval_ms: 60_000,
            boot_id: [2; 16],
            ..nth(2)
        };
        assert_eq!(sim.observe(20.0, withheld), vec![]);
        let host = sim.host("a");
        assert_eq!((host.beats, host.stats.reordered, host.losses), (3, 1, 0));
        assert_eq!(host.interval_ms(), 10_000);
        let registry = sim.monitor.registry();
        assert_eq!(
            registry.addr(registry.find("a").expect("known")),
            beat("a").addr
        );
        // The deadline still runs from 10 s: late at 25 s, down at 40 s.
        assert_eq!(sim.expire(24.9), vec![]);
        assert_eq!(sim.expire(25.0), one(EventKind::Late, "a"));
        assert_eq!(sim.expire(40.0), one(EventKind::Down, "a"));
        // Released after the death, an older beat recovers nothing.
        assert_eq!(apply(&mut sim, 41.0, nth(0)), Observed::Applied);
        assert_eq!(sim.state("a"), HostState::Down);
        assert_eq!(apply(&mut sim, 42.0, nth(0)), Observed::Replayed);
        assert_eq!(sim.observe(43.0, nth(4)), one(EventKind::Recovered, "a"));
    }

    // See: issue 13, item 3.
    #[test]
    fn with_keys_nothing_older_than_a_goodbye_revives_the_host() {
        let mut sim = keyed();
        sim.observe(0.0, nth(1));
        let bye = Observation {
            goodbye: true,
            ..nth(3)
        };
        assert_eq!(sim.observe(1.0, bye), one(EventKind::Left, "a"));
        assert_eq!(sim.observe(2.0, nth(2)), vec![]);
        assert_eq!(sim.expire(1000.0), vec![], "no false down");
        assert_eq!(sim.state("a"), HostState::Left);
        // The client's next run numbers higher: that is a return.
        let next_run = Observation {
            seq: Some(RUN + (1 << 32)),
            ..beat("a")
        };
        assert_eq!(sim.observe(1001.0, next_run), one(EventKind::Joined, "a"));
    }

    /// Without keys a seq proves nothing: a forged high one must not make
    /// the real host's beats "old", so they count as they come (the seed).
    #[test]
    fn without_keys_an_older_beat_still_counts() {
        let mut sim = Sim::new();
        sim.observe(0.0, nth(1));
        let forged_bye = Observation {
            goodbye: true,
            ..nth(1000)
        };
        assert_eq!(sim.observe(1.0, forged_bye), one(EventKind::Left, "a"));
        assert_eq!(sim.observe(2.0, nth(2)), one(EventKind::Joined, "a"));
    }

    // See: issue 13, item 5.
    #[test]
    fn with_keys_a_legacy_beat_never_feeds_a_host_that_numbers_its_beats() {
        let mut sim = keyed();
        let addr = SocketAddr::from(([10, 0, 0, 1], 5000));
        let legacy = |id| Observation::legacy(id, addr);
        let signed = |id, n, goodbye| Observation {
            seq: Some(RUN + n),
            goodbye,
            ..beat(id)
        };
        sim.observe(0.0, signed("10.0.0.1", 1, false));
        sim.observe(1.0, signed("10.0.0.1", 2, true));
        assert_eq!(
            apply(&mut sim, 2.0, legacy("10.0.0.1")),
            Observed::NotLegacy
        );
        assert_eq!(sim.state("10.0.0.1"), HostState::Left);
        // A host known only from `Thump!` is fed by it, until it signs.
        assert_eq!(
            sim.observe(3.0, legacy("10.0.0.2")),
            one(EventKind::Joined, "10.0.0.2")
        );
        assert_eq!(apply(&mut sim, 4.0, legacy("10.0.0.2")), Observed::Applied);
        assert!(sim.host("10.0.0.2").legacy());
        assert_eq!(
            apply(&mut sim, 5.0, signed("10.0.0.2", 1, false)),
            Observed::Applied
        );
        assert!(!sim.host("10.0.0.2").legacy());
        assert_eq!(
            apply(&mut sim, 6.0, legacy("10.0.0.2")),
            Observed::NotLegacy
        );
        // Without keys nothing is signed: one namespace, as in the seed.
        let mut open = Sim::new();
        open.observe(0.0, signed("10.0.0.1", 1, false));
        assert_eq!(apply(&mut open, 1.0, legacy("10.0.0.1")), Observed::Applied);
    }
}
