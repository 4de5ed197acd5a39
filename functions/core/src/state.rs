//! The deployment state machine. Every state change in every shape goes through
//! [`transition`].

use serde::{Deserialize, Serialize};

/// The lifecycle of a deployment: `QUEUED -> BUILDING -> UPLOADING -> READY`, or
/// `FAILED` / `CANCELED` from any state that is not final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentState {
    Queued,
    Building,
    Uploading,
    Ready,
    Failed,
    Canceled,
}

impl DeploymentState {
    pub const ALL: [DeploymentState; 6] = [
        Self::Queued,
        Self::Building,
        Self::Uploading,
        Self::Ready,
        Self::Failed,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Building => "BUILDING",
            Self::Uploading => "UPLOADING",
            Self::Ready => "READY",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// A final state never changes again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Ready | Self::Failed | Self::Canceled)
    }

    fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Building => 1,
            Self::Uploading => 2,
            Self::Ready | Self::Failed | Self::Canceled => 3,
        }
    }
}

impl std::fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of applying a requested state to the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Move to this state.
    To(DeploymentState),
    /// Already there, or already past it (a replayed or late event): change nothing.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a deployment that is {from} cannot become {to}")]
pub struct TransitionError {
    pub from: DeploymentState,
    pub to: DeploymentState,
}

/// Decides what applying `to` to a deployment in `from` does.
///
/// Idempotent: replaying an event yields [`Transition::Unchanged`]; an event that
/// arrives after the deployment moved further (say `BUILDING` after `UPLOADING`) is
/// also a no-op, so out-of-order delivery cannot move a deployment backwards. A final
/// state never changes; asking a final deployment for a different final state is an
/// error the caller can report (cancel a READY deployment: 409).
pub fn transition(
    from: DeploymentState,
    to: DeploymentState,
) -> Result<Transition, TransitionError> {
    use DeploymentState::*;
    if from == to {
        return Ok(Transition::Unchanged);
    }
    if from.is_final() {
        return Err(TransitionError { from, to });
    }
    match to {
        Queued => Ok(Transition::Unchanged),
        Failed | Canceled => Ok(Transition::To(to)),
        Ready if from != Uploading => Err(TransitionError { from, to }),
        _ if to.rank() < from.rank() => Ok(Transition::Unchanged),
        _ => Ok(Transition::To(to)),
    }
}

#[cfg(test)]
mod tests {
    use super::DeploymentState::*;
    use super::*;

    #[test]
    fn happy_path_moves_forward() {
        assert_eq!(transition(Queued, Building), Ok(Transition::To(Building)));
        assert_eq!(
            transition(Building, Uploading),
            Ok(Transition::To(Uploading))
        );
        assert_eq!(transition(Uploading, Ready), Ok(Transition::To(Ready)));
    }

    #[test]
    fn replayed_and_late_events_change_nothing() {
        assert_eq!(transition(Building, Building), Ok(Transition::Unchanged));
        assert_eq!(transition(Uploading, Building), Ok(Transition::Unchanged));
        assert_eq!(transition(Ready, Ready), Ok(Transition::Unchanged));
        assert_eq!(transition(Failed, Failed), Ok(Transition::Unchanged));
    }

    #[test]
    fn final_states_never_change() {
        for from in [Ready, Failed, Canceled] {
            for to in DeploymentState::ALL {
                if to != from {
                    assert!(transition(from, to).is_err(), "{from} -> {to}");
                }
            }
        }
    }

    #[test]
    fn ready_only_after_upload() {
        assert!(transition(Queued, Ready).is_err());
        assert!(transition(Building, Ready).is_err());
    }

    #[test]
    fn any_live_state_can_fail_or_be_canceled() {
        for from in [Queued, Building, Uploading] {
            assert_eq!(transition(from, Failed), Ok(Transition::To(Failed)));
            assert_eq!(transition(from, Canceled), Ok(Transition::To(Canceled)));
        }
    }

    #[test]
    fn names_round_trip() {
        for state in DeploymentState::ALL {
            assert_eq!(DeploymentState::parse(state.as_str()), Some(state));
        }
        assert_eq!(DeploymentState::parse("DONE"), None);
    }
}
