//! The six DLM lock modes and their compatibility matrix (rule book R7, R8).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A lock mode of the VMS / Linux DLM, from weakest to strongest.
///
/// The numeric order (`NL < CR < CW < PR < PW < EX`) is the one of R8; PR and CW are not
/// comparable for the purpose of conversions (see [`Mode::is_up_conversion`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Null: grants nothing, keeps the resource and its value block alive.
    NL,
    /// Concurrent read.
    CR,
    /// Concurrent write.
    CW,
    /// Protected read (shared).
    PR,
    /// Protected write (update).
    PW,
    /// Exclusive.
    EX,
}

/// R7: the compatibility matrix, row and column in `Mode::ALL` order; `true` means compatible.
///
/// ```text
///      NL CR CW PR PW EX
///  NL   1  1  1  1  1  1
///  CR   1  1  1  1  1  0
///  CW   1  1  1  0  0  0
///  PR   1  1  0  1  0  0
///  PW   1  1  0  0  0  0
///  EX   1  0  0  0  0  0
/// ```
pub const COMPATIBILITY: [[bool; 6]; 6] = {
    const T: bool = true;
    const F: bool = false;
    [
        [T, T, T, T, T, T],
        [T, T, T, T, T, F],
        [T, T, T, F, F, F],
        [T, T, F, T, F, F],
        [T, T, F, F, F, F],
        [T, F, F, F, F, F],
    ]
};

impl Mode {
    /// Every mode, weakest first.
    pub const ALL: [Mode; 6] = [Mode::NL, Mode::CR, Mode::CW, Mode::PR, Mode::PW, Mode::EX];

    /// The mode's position in [`Mode::ALL`] (0 for NL .. 5 for EX).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The mode at position `i` of [`Mode::ALL`], if any.
    pub const fn from_index(i: usize) -> Option<Mode> {
        if i < 6 { Some(Mode::ALL[i]) } else { None }
    }

    /// Whether a lock in `self` may be granted while another lock holds `other` (R7).
    pub const fn is_compatible(self, other: Mode) -> bool {
        COMPATIBILITY[self.index()][other.index()]
    }

    /// The two-letter name, as in the rule book.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::NL => "NL",
            Mode::CR => "CR",
            Mode::CW => "CW",
            Mode::PR => "PR",
            Mode::PW => "PW",
            Mode::EX => "EX",
        }
    }

    /// R8: a conversion from `self` to `to` is a *middle* conversion (PR→CW or CW→PR).
    pub const fn is_middle_conversion(self, to: Mode) -> bool {
        matches!((self, to), (Mode::PR, Mode::CW) | (Mode::CW, Mode::PR))
    }

    /// R8: a conversion from `self` to `to` is a *down* conversion: numerically lower and
    /// not PR→CW. Such a conversion is always granted at once (R17).
    pub const fn is_down_conversion(self, to: Mode) -> bool {
        (to as usize) < (self as usize) && !self.is_middle_conversion(to)
    }

    /// R8: a conversion from `self` to `to` is an *up* conversion: numerically higher, or CW→PR.
    pub const fn is_up_conversion(self, to: Mode) -> bool {
        (to as usize) > (self as usize) || matches!((self, to), (Mode::CW, Mode::PR))
    }

    /// R21: a conversion from `self` to `to` may carry QUECVT: exactly the up and middle
    /// conversions (NL->{CR,CW,PR,PW,EX}, CR->{CW,PR,PW,EX}, CW->{PR,PW,EX}, PR->{CW,PW,EX}
    /// and PW->EX).
    pub const fn allows_quecvt_to(self, to: Mode) -> bool {
        self.is_up_conversion(to) || self.is_middle_conversion(to)
    }

    /// R26: a conversion from `self` to `to` carrying VALBLK writes the value block (so it
    /// needs a value, R54): from PW or EX to any mode but PW->EX, which reads.
    pub const fn writes_value_block_to(self, to: Mode) -> bool {
        matches!(self, Mode::PW | Mode::EX) && !matches!((self, to), (Mode::PW, Mode::EX))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The error of parsing a [`Mode`] from a string that is not one of the six names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown lock mode {0:?}: expected one of NL, CR, CW, PR, PW, EX")]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;

    /// Parses a two-letter mode name, case-insensitively (`"ex"`, `"Pr"`, `"NL"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseModeError(s.to_owned()))
    }
}
