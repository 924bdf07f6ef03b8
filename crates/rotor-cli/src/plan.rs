//! The master key rotation planner, pure and free of I/O: `rotor mk rotate` and `rotor auto rotate`
//! follow it.
//!
//! [`plan`] is pure: from the units' registers and the service's rotation journal it picks the
//! one next step. The commands loop — read the real state, plan, do the step — until the plan
//! says done, so running a command again after any failure continues from where things really
//! are, never from what an operator saw. A unit already promoted counts as done; a unit that
//! lost its new register gets it again from a recovery unit that holds it.

use anyhow::{Result, anyhow, bail};
use rotor_crypto::Vp;
use rotor_server::rotation::{Journal, Phase};
use rotor_unit::wire::{CurrentState, NewState, Register, RotationLock, Ski, UnitKind, UnitStatus};

/// Which HPCS flow brings the new master key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Key parts loaded and committed by admins (`mk load`, `mk commit`).
    Parts,
    /// A random key made in a recovery unit and exported to the others.
    Auto,
}

/// A unit as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitView {
    /// The number `rotor units` gives it.
    pub number: usize,
    /// Operational or recovery.
    pub kind: UnitKind,
    /// Imprint mode.
    pub imprint: bool,
    /// Signature threshold.
    pub signature_threshold: u8,
    /// Installed admins.
    pub admins: Vec<Ski>,
    /// Current register VP, if valid.
    pub current: Option<Vp>,
    /// New register state and VP.
    pub new: NewState,
    /// New register VP (all zeros when empty).
    pub new_vp: Vp,
    /// Rotation lock.
    pub rotation: RotationLock,
}

impl UnitView {
    /// The view of a unit's status.
    pub fn of(number: usize, status: &UnitStatus) -> Self {
        Self {
            number,
            kind: status.kind,
            imprint: status.imprint,
            signature_threshold: status.signature_threshold,
            admins: status.admins.iter().map(|a| a.ski).collect(),
            current: (status.current.state == CurrentState::Valid).then_some(status.current.vp),
            new: status.new.state,
            new_vp: status.new.vp,
            rotation: status.rotation,
        }
    }

    fn holds_new(&self, vp: &Vp) -> bool {
        self.new != NewState::Empty && self.new_vp.matches(vp)
    }

    /// Whether the unit's current register holds `to`.
    pub fn promoted(&self, to: &Vp) -> bool {
        self.current.is_some_and(|current| current.matches(to))
    }
}

/// The service's rotation journal, as far as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalView {
    /// Source master key.
    pub from: Vp,
    /// Target master key.
    pub to: Vp,
    /// Where it stands.
    pub phase: Phase,
}

impl JournalView {
    /// The planner's part of the service's journal.
    pub fn of(journal: &Journal) -> Self {
        Self {
            from: journal.from,
            to: journal.to,
            phase: journal.phase,
        }
    }

    /// Whether the rotation is neither aborted nor completed.
    pub fn open(&self) -> bool {
        !matches!(self.phase, Phase::Aborted | Phase::Completed)
    }
}

/// The next thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A random new master key in this recovery unit's new register.
    Generate {
        /// Unit number.
        unit: usize,
    },
    /// Copy the key `vp` from `source` (its new register, or its current one when promoted)
    /// into the new register of `target`.
    Distribute {
        /// Recovery unit holding the key.
        source: usize,
        /// Its register holding it.
        register: Register,
        /// Unit that lacks it.
        target: usize,
        /// The key's VP.
        vp: Vp,
    },
    /// Commit the new register.
    Commit {
        /// Unit number.
        unit: usize,
        /// Its VP.
        vp: Vp,
    },
    /// Pin the committed new register.
    Pin {
        /// Unit number.
        unit: usize,
        /// Its VP.
        vp: Vp,
    },
    /// Let the service reencrypt key storage (start or resume) and wait for it.
    Reencrypt {
        /// Source.
        from: Vp,
        /// Target.
        to: Vp,
    },
    /// Promote the new register to current.
    Promote {
        /// Unit number.
        unit: usize,
        /// Its VP.
        vp: Vp,
    },
    /// Every unit is promoted: close the journal.
    Complete,
    /// Nothing left to do.
    Done {
        /// Source.
        from: Vp,
        /// Target.
        to: Vp,
    },
}

impl Step {
    /// The master key the rotation moves to, where the step names it.
    pub fn target(&self) -> Option<Vp> {
        match self {
            Self::Distribute { vp, .. }
            | Self::Commit { vp, .. }
            | Self::Pin { vp, .. }
            | Self::Promote { vp, .. } => Some(*vp),
            Self::Reencrypt { to, .. } | Self::Done { to, .. } => Some(*to),
            Self::Generate { .. } | Self::Complete => None,
        }
    }
}

/// Checks that hold before any rotation: one whole instance (checked by the caller), no unit in
/// imprint mode, equal signature thresholds, enough common admins for them.
fn precheck(units: &[UnitView]) -> Result<()> {
    if let Some(unit) = units.iter().find(|u| u.imprint) {
        bail!(
            "crypto unit {} is in imprint mode; initialize it first ('rotor auto init' or admins and thresholds)",
            unit.number
        );
    }
    let thresholds: Vec<String> = units
        .iter()
        .map(|u| format!("unit {}: {}", u.number, u.signature_threshold))
        .collect();
    if units
        .iter()
        .any(|u| u.signature_threshold != units[0].signature_threshold)
    {
        bail!(
            "the signature thresholds differ ({}); set the same thresholds on every unit",
            thresholds.join(", ")
        );
    }
    let common = units[0]
        .admins
        .iter()
        .filter(|ski| units.iter().all(|u| u.admins.contains(ski)))
        .count();
    if common < usize::from(units[0].signature_threshold) {
        bail!(
            "only {common} admin(s) are installed on every unit, fewer than the signature threshold of {}; install the same admins everywhere",
            units[0].signature_threshold
        );
    }
    Ok(())
}

fn differing(units: &[UnitView], value: impl Fn(&UnitView) -> String) -> String {
    units
        .iter()
        .map(|u| format!("unit {}: {}", u.number, value(u)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rotation's source and target, from the journal when one is open, else from the units.
fn endpoints(
    flow: Flow,
    units: &[UnitView],
    journal: Option<&JournalView>,
) -> Result<(Vp, Option<Vp>)> {
    if let Some(journal) = journal.filter(|j| j.open()) {
        if journal.phase == Phase::Aborting {
            bail!(
                "admins aborted this rotation; run 'rotor mk rotate --abort' to finish rewrapping key storage back to master key {}",
                journal.from
            );
        }
        return Ok((journal.from, Some(journal.to)));
    }
    let Some(from) = units[0].current else {
        bail!(
            "crypto unit {}'s current register is empty; every unit needs the current master key (see 'rotor auto recover')",
            units[0].number
        );
    };
    if units
        .iter()
        .any(|u| !u.current.is_some_and(|c| c.matches(&from)))
    {
        bail!(
            "the current registers differ ({}); every unit must hold the same current master key",
            differing(units, |u| u
                .current
                .map_or_else(|| "Empty".to_owned(), |vp| vp.to_hex()))
        );
    }
    match flow {
        Flow::Parts => {
            if units.iter().any(|u| u.new != NewState::FullCommitted)
                || units.iter().any(|u| !u.new_vp.matches(&units[0].new_vp))
            {
                bail!(
                    "every new register must be Full Committed with one VP ({}); run 'rotor mk load' and 'rotor mk commit' on every unit",
                    differing(units, |u| format!("{} {}", u.new.label(), u.new_vp))
                );
            }
            Ok((from, Some(units[0].new_vp)))
        }
        Flow::Auto => {
            // A key in a recovery unit's new register is this command's own, from a run that
            // stopped part way; anything else in a new register is not ours to overwrite.
            let ours = units
                .iter()
                .find(|u| u.kind == UnitKind::Recovery && u.new != NewState::Empty)
                .map(|u| u.new_vp);
            let foreign: Vec<&UnitView> = units
                .iter()
                .filter(|u| {
                    u.new != NewState::Empty && ours.is_none_or(|vp| !u.new_vp.matches(&vp))
                })
                .collect();
            if !foreign.is_empty() {
                bail!(
                    "the new registers must be Empty before an automatic rotation ({}); clear them with 'rotor mk clear-new' if nothing depends on them",
                    differing(units, |u| format!("{} {}", u.new.label(), u.new_vp))
                );
            }
            Ok((from, ours))
        }
    }
}

/// The next step of the rotation, from the units' state and the service's journal.
pub fn plan(flow: Flow, units: &[UnitView], journal: Option<&JournalView>) -> Result<Step> {
    if units.is_empty() {
        bail!("no crypto unit is selected");
    }
    precheck(units)?;
    let open = journal.filter(|j| j.open());
    if let Some(last) = journal.filter(|j| j.phase == Phase::Completed)
        && flow == Flow::Parts
        && units
            .iter()
            .all(|u| u.promoted(&last.to) && u.new == NewState::Empty)
    {
        return Ok(Step::Done {
            from: last.from,
            to: last.to,
        });
    }
    let (from, to) = endpoints(flow, units, journal)?;
    let Some(to) = to else {
        let recovery = units
            .iter()
            .find(|u| u.kind == UnitKind::Recovery)
            .ok_or_else(|| anyhow!("the instance has no recovery crypto unit; rotate with key parts ('rotor mk load', 'rotor mk commit', 'rotor mk rotate')"))?;
        return Ok(Step::Generate {
            unit: recovery.number,
        });
    };
    if let Some(unit) = units
        .iter()
        .find(|u| !u.promoted(&to) && !u.holds_new(&to) && u.new != NewState::Empty)
    {
        bail!(
            "crypto unit {}'s new register holds another key (VP {}) than this rotation's {to}",
            unit.number,
            unit.new_vp
        );
    }
    if let Some(unit) = units.iter().find(|u| u.rotation == RotationLock::Aborting) {
        bail!(
            "crypto unit {} accepted an abort; run 'rotor mk rotate --abort' to finish it",
            unit.number
        );
    }
    let reencrypted = open.is_some_and(|j| j.phase == Phase::Reencrypted);
    if !reencrypted {
        if let Some(target) = units.iter().find(|u| !u.promoted(&to) && !u.holds_new(&to)) {
            let source = units
                .iter()
                .find(|u| u.kind == UnitKind::Recovery && (u.holds_new(&to) || u.promoted(&to)));
            let Some(source) = source else {
                bail!(
                    "crypto unit {} lacks the new master key {to} and no recovery unit holds it to copy; load the same key parts on it ('rotor mk load') and run the rotation again",
                    target.number
                );
            };
            return Ok(Step::Distribute {
                source: source.number,
                register: if source.promoted(&to) {
                    Register::Current
                } else {
                    Register::New
                },
                target: target.number,
                vp: to,
            });
        }
        if let Some(unit) = units.iter().find(|u| u.new == NewState::FullUncommitted) {
            return Ok(Step::Commit {
                unit: unit.number,
                vp: to,
            });
        }
        if let Some(unit) = units
            .iter()
            .find(|u| !u.promoted(&to) && u.rotation == RotationLock::None)
        {
            return Ok(Step::Pin {
                unit: unit.number,
                vp: to,
            });
        }
        return Ok(Step::Reencrypt { from, to });
    }
    if let Some(unit) = units.iter().find(|u| !u.promoted(&to)) {
        if unit.rotation != RotationLock::Reencrypted {
            // The service tells every unit before it records the reencryption as done.
            return Ok(Step::Reencrypt { from, to });
        }
        return Ok(Step::Promote {
            unit: unit.number,
            vp: to,
        });
    }
    match open {
        Some(_) => Ok(Step::Complete),
        None => Ok(Step::Done { from, to }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp(byte: u8) -> Vp {
        Vp([byte; 32])
    }

    fn unit(number: usize, kind: UnitKind, current: u8, new: NewState, new_vp: u8) -> UnitView {
        UnitView {
            number,
            kind,
            imprint: false,
            signature_threshold: 2,
            admins: vec![Ski([1; 32]), Ski([2; 32])],
            current: Some(vp(current)),
            new,
            new_vp: if new == NewState::Empty {
                Vp::EMPTY
            } else {
                vp(new_vp)
            },
            rotation: RotationLock::None,
        }
    }

    fn journal(phase: Phase) -> JournalView {
        JournalView {
            from: vp(1),
            to: vp(2),
            phase,
        }
    }

    #[test]
    fn the_automatic_flow_generates_distributes_commits_pins_then_reencrypts() {
        let mut units = vec![
            unit(1, UnitKind::Operational, 1, NewState::Empty, 0),
            unit(2, UnitKind::Recovery, 1, NewState::Empty, 0),
        ];
        assert_eq!(
            plan(Flow::Auto, &units, None).unwrap(),
            Step::Generate { unit: 2 }
        );
        units[1].new = NewState::FullUncommitted;
        units[1].new_vp = vp(2);
        assert!(matches!(
            plan(Flow::Auto, &units, None).unwrap(),
            Step::Distribute {
                source: 2,
                target: 1,
                register: Register::New,
                ..
            }
        ));
        units[0].new = NewState::FullUncommitted;
        units[0].new_vp = vp(2);
        assert_eq!(
            plan(Flow::Auto, &units, None).unwrap(),
            Step::Commit { unit: 1, vp: vp(2) }
        );
        units[0].new = NewState::FullCommitted;
        units[1].new = NewState::FullCommitted;
        assert_eq!(
            plan(Flow::Auto, &units, None).unwrap(),
            Step::Pin { unit: 1, vp: vp(2) }
        );
        units[0].rotation = RotationLock::Reencrypting;
        units[1].rotation = RotationLock::Reencrypting;
        assert_eq!(
            plan(Flow::Auto, &units, None).unwrap(),
            Step::Reencrypt {
                from: vp(1),
                to: vp(2)
            }
        );
    }

    #[test]
    fn after_reencryption_only_unpromoted_units_are_promoted() {
        let mut units = vec![
            unit(1, UnitKind::Operational, 2, NewState::Empty, 0),
            unit(2, UnitKind::Operational, 1, NewState::FullCommitted, 2),
        ];
        units[1].rotation = RotationLock::Reencrypted;
        let reencrypted = journal(Phase::Reencrypted);
        assert_eq!(
            plan(Flow::Parts, &units, Some(&reencrypted)).unwrap(),
            Step::Promote { unit: 2, vp: vp(2) }
        );
        units[1] = unit(2, UnitKind::Operational, 2, NewState::Empty, 0);
        assert_eq!(
            plan(Flow::Parts, &units, Some(&reencrypted)).unwrap(),
            Step::Complete
        );
        assert_eq!(
            plan(Flow::Parts, &units, Some(&journal(Phase::Completed))).unwrap(),
            Step::Done {
                from: vp(1),
                to: vp(2)
            }
        );
        assert!(
            plan(Flow::Parts, &units, None)
                .unwrap_err()
                .to_string()
                .contains("Full Committed")
        );
    }

    #[test]
    fn a_lost_new_register_comes_back_from_a_recovery_unit() {
        let mut units = vec![
            unit(1, UnitKind::Operational, 1, NewState::Empty, 0),
            unit(2, UnitKind::Recovery, 1, NewState::FullCommitted, 2),
        ];
        units[1].rotation = RotationLock::Reencrypting;
        assert!(matches!(
            plan(Flow::Parts, &units, Some(&journal(Phase::Reencrypting))).unwrap(),
            Step::Distribute {
                source: 2,
                target: 1,
                ..
            }
        ));
        units[1].kind = UnitKind::Operational;
        assert!(plan(Flow::Parts, &units, Some(&journal(Phase::Reencrypting))).is_err());
    }

    #[test]
    fn prechecks_name_the_units_that_differ() {
        let mut units = vec![
            unit(1, UnitKind::Operational, 1, NewState::FullCommitted, 2),
            unit(2, UnitKind::Operational, 1, NewState::FullCommitted, 3),
        ];
        let err = plan(Flow::Parts, &units, None).unwrap_err().to_string();
        assert!(err.contains("unit 1") && err.contains("unit 2"), "{err}");
        units[1].new_vp = vp(2);
        units[1].signature_threshold = 1;
        assert!(
            plan(Flow::Parts, &units, None)
                .unwrap_err()
                .to_string()
                .contains("thresholds differ")
        );
        units[1].signature_threshold = 2;
        units[1].current = Some(vp(9));
        assert!(
            plan(Flow::Parts, &units, None)
                .unwrap_err()
                .to_string()
                .contains("current registers differ")
        );
        units[1].current = Some(vp(1));
        units[1].imprint = true;
        assert!(
            plan(Flow::Parts, &units, None)
                .unwrap_err()
                .to_string()
                .contains("imprint")
        );
        let foreign = vec![
            unit(1, UnitKind::Operational, 1, NewState::FullCommitted, 5),
            unit(2, UnitKind::Recovery, 1, NewState::Empty, 0),
        ];
        assert!(
            plan(Flow::Auto, &foreign, None)
                .unwrap_err()
                .to_string()
                .contains("must be Empty")
        );
    }
}
