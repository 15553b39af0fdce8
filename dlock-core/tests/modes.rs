//! R7, R8: the compatibility matrix, spelled out row by row, and mode names; R21: which
//! conversions may carry QUECVT.

use dlock_core::{COMPATIBILITY, Mode};

#[test]
fn r7_matrix_row_by_row() {
    use Mode::*;
    // Row NL: compatible with everything.
    assert!(NL.is_compatible(NL));
    assert!(NL.is_compatible(CR));
    assert!(NL.is_compatible(CW));
    assert!(NL.is_compatible(PR));
    assert!(NL.is_compatible(PW));
    assert!(NL.is_compatible(EX));
    // Row CR: everything but EX.
    assert!(CR.is_compatible(NL));
    assert!(CR.is_compatible(CR));
    assert!(CR.is_compatible(CW));
    assert!(CR.is_compatible(PR));
    assert!(CR.is_compatible(PW));
    assert!(!CR.is_compatible(EX));
    // Row CW: NL, CR, CW.
    assert!(CW.is_compatible(NL));
    assert!(CW.is_compatible(CR));
    assert!(CW.is_compatible(CW));
    assert!(!CW.is_compatible(PR));
    assert!(!CW.is_compatible(PW));
    assert!(!CW.is_compatible(EX));
    // Row PR: NL, CR, PR.
    assert!(PR.is_compatible(NL));
    assert!(PR.is_compatible(CR));
    assert!(!PR.is_compatible(CW));
    assert!(PR.is_compatible(PR));
    assert!(!PR.is_compatible(PW));
    assert!(!PR.is_compatible(EX));
    // Row PW: NL, CR.
    assert!(PW.is_compatible(NL));
    assert!(PW.is_compatible(CR));
    assert!(!PW.is_compatible(CW));
    assert!(!PW.is_compatible(PR));
    assert!(!PW.is_compatible(PW));
    assert!(!PW.is_compatible(EX));
    // Row EX: NL only.
    assert!(EX.is_compatible(NL));
    assert!(!EX.is_compatible(CR));
    assert!(!EX.is_compatible(CW));
    assert!(!EX.is_compatible(PR));
    assert!(!EX.is_compatible(PW));
    assert!(!EX.is_compatible(EX));
}

#[test]
fn r7_table_is_symmetric_and_matches_the_const() {
    for a in Mode::ALL {
        for b in Mode::ALL {
            assert_eq!(a.is_compatible(b), b.is_compatible(a), "{a} {b}");
            assert_eq!(a.is_compatible(b), COMPATIBILITY[a.index()][b.index()]);
        }
    }
}

#[test]
fn all_is_weakest_first_and_indices_round_trip() {
    assert_eq!(
        Mode::ALL,
        [Mode::NL, Mode::CR, Mode::CW, Mode::PR, Mode::PW, Mode::EX]
    );
    for (i, m) in Mode::ALL.into_iter().enumerate() {
        assert_eq!(m.index(), i);
        assert_eq!(Mode::from_index(i), Some(m));
    }
    assert_eq!(Mode::from_index(6), None);
}

#[test]
fn display_and_from_str_case_insensitive() {
    for m in Mode::ALL {
        let s = m.to_string();
        assert_eq!(s.parse::<Mode>(), Ok(m));
        assert_eq!(s.to_lowercase().parse::<Mode>(), Ok(m));
    }
    assert_eq!("Pr".parse::<Mode>(), Ok(Mode::PR));
    assert_eq!("eX".parse::<Mode>(), Ok(Mode::EX));
    assert_eq!(Mode::CW.to_string(), "CW");
    assert_eq!(format!("{:>4}", Mode::NL), "  NL");
    assert!("XX".parse::<Mode>().is_err());
    assert!("".parse::<Mode>().is_err());
    assert!("EXX".parse::<Mode>().is_err());
}

#[test]
fn r8_conversion_direction() {
    use Mode::*;
    // Middle conversions: PR<->CW.
    assert!(PR.is_middle_conversion(CW));
    assert!(CW.is_middle_conversion(PR));
    assert!(!PR.is_down_conversion(CW));
    assert!(CW.is_up_conversion(PR));
    assert!(!PR.is_up_conversion(CW));
    // Down conversions.
    assert!(EX.is_down_conversion(NL));
    assert!(PW.is_down_conversion(PR));
    assert!(PR.is_down_conversion(CR));
    assert!(!NL.is_down_conversion(NL));
    // Up conversions.
    assert!(NL.is_up_conversion(EX));
    assert!(PR.is_up_conversion(PW));
    assert!(!EX.is_up_conversion(EX));
    // R8: every real down-conversion widens the set of compatible modes.
    for from in Mode::ALL {
        for to in Mode::ALL {
            if from.is_down_conversion(to) {
                for m in Mode::ALL {
                    if from.is_compatible(m) {
                        assert!(to.is_compatible(m), "{from}->{to} loses {m}");
                    }
                }
            }
        }
    }
}

/// R21: the conversions that may carry QUECVT, row by row (from NL..EX to NL..EX; '1'
/// allowed): the up and middle conversions, nothing else.
#[test]
fn r21_quecvt_matrix() {
    let rows = ["011111", "001111", "000111", "001011", "000001", "000000"];
    for (from, row) in Mode::ALL.into_iter().zip(rows) {
        for (to, c) in Mode::ALL.into_iter().zip(row.chars()) {
            assert_eq!(from.allows_quecvt_to(to), c == '1', "{from}->{to}");
        }
    }
}
