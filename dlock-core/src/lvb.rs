//! The lock value block (R24..R30).
//!
//! A queued request never writes the value block: writes happen only from PW or EX to an
//! equal or lower mode (R26), and such conversions are always granted on arrival (R16,
//! R17). So only grants on arrival and unlocks carry a value to write.

use crate::Mode;
use crate::resource::Resource;

/// What a grant does to the value block when it carries VALBLK (the table of R26).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LvbOp {
    /// Copy the value block and its validity into the completion.
    Read,
    /// Replace the value block with the caller's value and make it valid.
    Write,
    /// Nothing.
    Nothing,
}

/// R26: `gr` is the granted mode before the operation (`None` for a new lock), `rq` the new
/// mode.
pub(crate) fn lvb_op(gr: Option<Mode>, rq: Mode) -> LvbOp {
    match gr {
        None => LvbOp::Read,
        Some(g) if g.writes_value_block_to(rq) => LvbOp::Write,
        Some(g) if rq.index() >= g.index() => LvbOp::Read,
        Some(_) => LvbOp::Nothing,
    }
}

/// The value and validity a read returns (R24: zeros while nothing was written).
pub(crate) fn read(res: &Resource, lvb_len: usize) -> (Vec<u8>, bool) {
    let value = match &res.lvb {
        Some(v) => v.to_vec(),
        None => vec![0; lvb_len],
    };
    (value, res.lvb_valid)
}

/// A write: `value` zero-padded to `lvb_len` replaces the value block, which becomes valid
/// (R26, R28, R30). An all-zero value frees the allocation again.
pub(crate) fn write(res: &mut Resource, value: &[u8], lvb_len: usize) {
    if value.iter().all(|&b| b == 0) {
        res.lvb = None;
    } else {
        let mut v = vec![0; lvb_len];
        let n = value.len().min(lvb_len);
        v[..n].copy_from_slice(&value[..n]);
        res.lvb = Some(Box::new(v.into_boxed_slice()));
    }
    res.lvb_valid = true;
}

/// R29: mark the value block not valid; its contents are kept.
pub(crate) fn invalidate(res: &mut Resource) {
    res.lvb_valid = false;
}

#[cfg(test)]
mod tests {
    use super::{LvbOp, lvb_op};
    use crate::Mode;

    /// R26, the whole table, row by row ('r' read, 'w' write, '-' nothing).
    #[test]
    fn r26_table() {
        let rows: [(Option<Mode>, &str); 7] = [
            (None, "rrrrrr"),
            (Some(Mode::NL), "rrrrrr"),
            (Some(Mode::CR), "-rrrrr"),
            (Some(Mode::CW), "--rrrr"),
            (Some(Mode::PR), "---rrr"),
            (Some(Mode::PW), "wwwwwr"),
            (Some(Mode::EX), "wwwwww"),
        ];
        for (gr, row) in rows {
            for (rq, c) in Mode::ALL.into_iter().zip(row.chars()) {
                let want = match c {
                    'r' => LvbOp::Read,
                    'w' => LvbOp::Write,
                    _ => LvbOp::Nothing,
                };
                assert_eq!(lvb_op(gr, rq), want, "{gr:?} -> {rq}");
            }
        }
    }
}
