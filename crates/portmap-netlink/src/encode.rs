//! Object → attribute encoding: the attributes of tables, chains, rules (every [`Expr`]), sets and
//! set elements, in the order and form nft 1.0.6 (libnftnl) writes them, so that what `Batch`
//! builds lists identically to what `nft -f` builds.
//!
//! It writes attributes into an open message; framing and chunking are `batch`'s job. It must not
//! choose what to encode (that is the caller's model).

use crate::attr::Writer;
use crate::consts::{
    NFT_LOOKUP_F_INV, NFTA_BITWISE_DREG, NFTA_BITWISE_LEN, NFTA_BITWISE_MASK, NFTA_BITWISE_SREG,
    NFTA_BITWISE_XOR, NFTA_CHAIN_HOOK, NFTA_CHAIN_NAME, NFTA_CHAIN_POLICY, NFTA_CHAIN_TABLE, NFTA_CHAIN_TYPE,
    NFTA_CHAIN_USERDATA, NFTA_CMP_DATA, NFTA_CMP_OP, NFTA_CMP_SREG, NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS,
    NFTA_CT_DIRECTION, NFTA_CT_DREG, NFTA_CT_KEY, NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_EXPR_DATA,
    NFTA_EXPR_NAME, NFTA_FIB_DREG, NFTA_FIB_FLAGS, NFTA_FIB_RESULT, NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY,
    NFTA_IMMEDIATE_DATA, NFTA_IMMEDIATE_DREG, NFTA_LIST_ELEM, NFTA_LOOKUP_DREG, NFTA_LOOKUP_FLAGS,
    NFTA_LOOKUP_SET, NFTA_LOOKUP_SET_ID, NFTA_LOOKUP_SREG, NFTA_MASQ_FLAGS, NFTA_META_DREG, NFTA_META_KEY,
    NFTA_NAT_FAMILY, NFTA_NAT_FLAGS, NFTA_NAT_REG_ADDR_MAX, NFTA_NAT_REG_ADDR_MIN, NFTA_NAT_REG_PROTO_MAX,
    NFTA_NAT_REG_PROTO_MIN, NFTA_NAT_TYPE, NFTA_PAYLOAD_BASE, NFTA_PAYLOAD_DREG, NFTA_PAYLOAD_LEN,
    NFTA_PAYLOAD_OFFSET, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_TABLE, NFTA_RULE_USERDATA,
    NFTA_SET_DATA_LEN, NFTA_SET_DATA_TYPE, NFTA_SET_DESC, NFTA_SET_DESC_CONCAT, NFTA_SET_ELEM_DATA,
    NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END, NFTA_SET_ELEM_USERDATA,
    NFTA_SET_FIELD_LEN, NFTA_SET_FLAGS, NFTA_SET_ID, NFTA_SET_KEY_LEN, NFTA_SET_KEY_TYPE, NFTA_SET_NAME,
    NFTA_SET_TABLE, NFTA_SET_USERDATA, NFTA_TABLE_FLAGS, NFTA_TABLE_NAME, NFTA_TABLE_USERDATA,
    NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE,
};
use crate::consts::{
    NFTA_LIMIT_BURST, NFTA_LIMIT_FLAGS, NFTA_LIMIT_RATE, NFTA_LIMIT_TYPE, NFTA_LIMIT_UNIT, NFTA_LOG_GROUP,
    NFTA_LOG_PREFIX, NFTA_OBJ_DATA, NFTA_OBJ_NAME, NFTA_OBJ_TABLE, NFTA_OBJ_TYPE, NFTA_OBJ_USERDATA,
    NFTA_OBJREF_SET_ID, NFTA_OBJREF_SET_NAME, NFTA_OBJREF_SET_SREG, NFTA_SET_ELEM_OBJREF, NFTA_SET_OBJ_TYPE,
};
use crate::object::{Chain, Data, Element, Expr, Object, ObjectKind, Register, Rule, Set, Table};

pub(crate) fn table(w: &mut Writer<'_>, t: &Table) {
    w.put_str(NFTA_TABLE_NAME, &t.name);
    w.put_u32(NFTA_TABLE_FLAGS, t.flags);
    if let Some(ud) = &t.userdata {
        w.put(NFTA_TABLE_USERDATA, ud);
    }
}

pub(crate) fn chain(w: &mut Writer<'_>, c: &Chain) {
    w.put_str(NFTA_CHAIN_TABLE, &c.table);
    w.put_str(NFTA_CHAIN_NAME, &c.name);
    if let Some(base) = &c.base {
        w.put_str(NFTA_CHAIN_TYPE, &base.chain_type);
        w.put_u32(NFTA_CHAIN_POLICY, base.policy.number());
        let hook = w.nest_start(NFTA_CHAIN_HOOK);
        w.put_u32(NFTA_HOOK_HOOKNUM, base.hook.number());
        w.put_u32(NFTA_HOOK_PRIORITY, base.priority.cast_unsigned());
        w.nest_end(hook);
    }
    if let Some(ud) = &c.userdata {
        w.put(NFTA_CHAIN_USERDATA, ud);
    }
}

pub(crate) fn rule(w: &mut Writer<'_>, r: &Rule) {
    w.put_str(NFTA_RULE_TABLE, &r.table);
    w.put_str(NFTA_RULE_CHAIN, &r.chain);
    let list = w.nest_start(NFTA_RULE_EXPRESSIONS);
    for e in &r.exprs {
        expr(w, e);
    }
    w.nest_end(list);
    if let Some(ud) = &r.userdata {
        w.put(NFTA_RULE_USERDATA, ud);
    }
}

pub(crate) fn set(w: &mut Writer<'_>, s: &Set) {
    w.put_str(NFTA_SET_TABLE, &s.table);
    w.put_str(NFTA_SET_NAME, &s.name);
    w.put_u32(NFTA_SET_FLAGS, s.flags);
    w.put_u32(NFTA_SET_KEY_TYPE, s.key_type);
    w.put_u32(NFTA_SET_KEY_LEN, s.key_len);
    if let Some(t) = s.data_type {
        w.put_u32(NFTA_SET_DATA_TYPE, t);
    }
    if let Some(l) = s.data_len {
        w.put_u32(NFTA_SET_DATA_LEN, l);
    }
    if !s.concat.is_empty() {
        let desc = w.nest_start(NFTA_SET_DESC);
        let concat = w.nest_start(NFTA_SET_DESC_CONCAT);
        for len in &s.concat {
            let field = w.nest_start(NFTA_LIST_ELEM);
            w.put_u32(NFTA_SET_FIELD_LEN, *len);
            w.nest_end(field);
        }
        w.nest_end(concat);
        w.nest_end(desc);
    }
    if let Some(t) = s.obj_type {
        w.put_u32(NFTA_SET_OBJ_TYPE, t);
    }
    if s.id != 0 {
        w.put_u32(NFTA_SET_ID, s.id);
    }
    if let Some(ud) = &s.userdata {
        w.put(NFTA_SET_USERDATA, ud);
    }
}

/// A stateful object, as nft 1.0.6 writes it: table, name, type, userdata, then the data nest (a
/// counter's values, zero for a new one; a limit's rate, unit, burst, type and flags).
pub(crate) fn object(w: &mut Writer<'_>, o: &Object) {
    w.put_str(NFTA_OBJ_TABLE, &o.table);
    w.put_str(NFTA_OBJ_NAME, &o.name);
    w.put_u32(NFTA_OBJ_TYPE, o.kind.type_number());
    if let Some(ud) = &o.userdata {
        w.put(NFTA_OBJ_USERDATA, ud);
    }
    match &o.kind {
        ObjectKind::Counter { packets, bytes } => {
            let d = w.nest_start(NFTA_OBJ_DATA);
            w.put_u64(NFTA_COUNTER_BYTES, *bytes);
            w.put_u64(NFTA_COUNTER_PACKETS, *packets);
            w.nest_end(d);
        }
        ObjectKind::Limit {
            rate,
            unit,
            burst,
            limit_type,
            flags,
        } => {
            let d = w.nest_start(NFTA_OBJ_DATA);
            w.put_u64(NFTA_LIMIT_RATE, *rate);
            w.put_u64(NFTA_LIMIT_UNIT, *unit);
            w.put_u32(NFTA_LIMIT_BURST, *burst);
            w.put_u32(NFTA_LIMIT_TYPE, *limit_type);
            w.put_u32(NFTA_LIMIT_FLAGS, *flags);
            w.nest_end(d);
        }
        ObjectKind::Other(_) => {}
    }
}

/// One `NFTA_LIST_ELEM` of an element list. Deletions carry only what identifies the element.
pub(crate) fn element(w: &mut Writer<'_>, e: &Element, delete: bool) {
    let elem = w.nest_start(NFTA_LIST_ELEM);
    if e.flags != 0 {
        w.put_u32(NFTA_SET_ELEM_FLAGS, e.flags);
    }
    value(w, NFTA_SET_ELEM_KEY, &e.key);
    if let Some(end) = &e.key_end {
        value(w, NFTA_SET_ELEM_KEY_END, end);
    }
    if !delete {
        match &e.data {
            Some(Data::Object(name)) => w.put_str(NFTA_SET_ELEM_OBJREF, name),
            Some(d) => data(w, NFTA_SET_ELEM_DATA, d),
            None => {}
        }
        if let Some(ms) = e.timeout {
            w.put_u64(crate::consts::NFTA_SET_ELEM_TIMEOUT, ms);
        }
        if let Some(ud) = &e.userdata {
            w.put(NFTA_SET_ELEM_USERDATA, ud);
        }
    }
    w.nest_end(elem);
}

/// A nest `ty` holding `NFTA_DATA_VALUE`.
fn value(w: &mut Writer<'_>, ty: u16, bytes: &[u8]) {
    let nest = w.nest_start(ty);
    w.put(NFTA_DATA_VALUE, bytes);
    w.nest_end(nest);
}

/// A nest `ty` holding `NFTA_DATA_VALUE` or `NFTA_DATA_VERDICT`.
fn data(w: &mut Writer<'_>, ty: u16, d: &Data) {
    match d {
        Data::Value(bytes) => value(w, ty, bytes),
        Data::Verdict(v) => {
            let nest = w.nest_start(ty);
            let verdict = w.nest_start(NFTA_DATA_VERDICT);
            w.put_u32(NFTA_VERDICT_CODE, v.code().cast_unsigned());
            if let Some(chain) = v.chain() {
                w.put_str(NFTA_VERDICT_CHAIN, chain);
            }
            w.nest_end(verdict);
            w.nest_end(nest);
        }
        // Only element data names an object; it is written as NFTA_SET_ELEM_OBJREF by `element`.
        Data::Object(_) => {}
    }
}

fn reg(w: &mut Writer<'_>, ty: u16, r: Register) {
    w.put_u32(ty, r.number());
}

/// One expression: `NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { ... } }`.
pub(crate) fn expr(w: &mut Writer<'_>, e: &Expr) {
    let elem = w.nest_start(NFTA_LIST_ELEM);
    w.put_str(NFTA_EXPR_NAME, expr_name(e));
    if let Expr::Unknown { .. } = e {
        // Nothing to say about it: the kernel will refuse the rule, naming this message.
        w.nest_end(elem);
        return;
    }
    let d = w.nest_start(NFTA_EXPR_DATA);
    match e {
        Expr::Meta { key, dreg } => {
            w.put_u32(NFTA_META_KEY, key.number());
            reg(w, NFTA_META_DREG, *dreg);
        }
        Expr::Cmp { sreg, op, data } => {
            reg(w, NFTA_CMP_SREG, *sreg);
            w.put_u32(NFTA_CMP_OP, op.number());
            value(w, NFTA_CMP_DATA, data);
        }
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            reg(w, NFTA_PAYLOAD_DREG, *dreg);
            w.put_u32(NFTA_PAYLOAD_BASE, base.number());
            w.put_u32(NFTA_PAYLOAD_OFFSET, *offset);
            w.put_u32(NFTA_PAYLOAD_LEN, *len);
        }
        Expr::Bitwise {
            sreg,
            dreg,
            len,
            mask,
            xor,
        } => {
            reg(w, NFTA_BITWISE_SREG, *sreg);
            reg(w, NFTA_BITWISE_DREG, *dreg);
            w.put_u32(NFTA_BITWISE_LEN, *len);
            value(w, NFTA_BITWISE_MASK, mask);
            value(w, NFTA_BITWISE_XOR, xor);
        }
        Expr::Lookup {
            sreg,
            dreg,
            set,
            set_id,
            invert,
        } => {
            reg(w, NFTA_LOOKUP_SREG, *sreg);
            if let Some(dreg) = dreg {
                reg(w, NFTA_LOOKUP_DREG, *dreg);
            }
            w.put_str(NFTA_LOOKUP_SET, set);
            if *set_id != 0 {
                w.put_u32(NFTA_LOOKUP_SET_ID, *set_id);
            }
            if *invert {
                w.put_u32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
            }
        }
        Expr::Immediate { dreg, data: d } => {
            reg(w, NFTA_IMMEDIATE_DREG, *dreg);
            data(w, NFTA_IMMEDIATE_DATA, d);
        }
        Expr::Nat {
            nat_type,
            family,
            addr_min,
            addr_max,
            proto_min,
            proto_max,
            flags,
        } => {
            w.put_u32(NFTA_NAT_TYPE, nat_type.number());
            w.put_u32(NFTA_NAT_FAMILY, u32::from(*family));
            let regs = [
                (NFTA_NAT_REG_ADDR_MIN, addr_min),
                (NFTA_NAT_REG_ADDR_MAX, addr_max),
                (NFTA_NAT_REG_PROTO_MIN, proto_min),
                (NFTA_NAT_REG_PROTO_MAX, proto_max),
            ];
            for (ty, r) in regs {
                if let Some(r) = r {
                    reg(w, ty, *r);
                }
            }
            if *flags != 0 {
                w.put_u32(NFTA_NAT_FLAGS, *flags);
            }
        }
        Expr::Masq { flags } => {
            if *flags != 0 {
                w.put_u32(NFTA_MASQ_FLAGS, *flags);
            }
        }
        Expr::Counter { bytes, packets } => {
            // nft sends an empty counter; values are only sent when restoring non-zero ones.
            if *bytes != 0 || *packets != 0 {
                w.put_u64(NFTA_COUNTER_BYTES, *bytes);
                w.put_u64(NFTA_COUNTER_PACKETS, *packets);
            }
        }
        Expr::Ct { key, dreg, direction } => {
            w.put_u32(NFTA_CT_KEY, *key);
            reg(w, NFTA_CT_DREG, *dreg);
            if let Some(dir) = direction {
                w.put(NFTA_CT_DIRECTION, &[*dir]);
            }
        }
        Expr::Objref { sreg, set, set_id } => {
            reg(w, NFTA_OBJREF_SET_SREG, *sreg);
            w.put_str(NFTA_OBJREF_SET_NAME, set);
            if *set_id != 0 {
                w.put_u32(NFTA_OBJREF_SET_ID, *set_id);
            }
        }
        Expr::Log { group, prefix } => {
            // nft sends the prefix before the group.
            if let Some(prefix) = prefix {
                w.put_str(NFTA_LOG_PREFIX, prefix);
            }
            if let Some(group) = group {
                w.put_u16(NFTA_LOG_GROUP, *group);
            }
        }
        Expr::Fib { flags, result, dreg } => {
            w.put_u32(NFTA_FIB_FLAGS, *flags);
            w.put_u32(NFTA_FIB_RESULT, *result);
            reg(w, NFTA_FIB_DREG, *dreg);
        }
        Expr::Unknown { .. } => {}
    }
    w.nest_end(d);
    w.nest_end(elem);
}

/// The kernel's name for an expression (`NFTA_EXPR_NAME`).
pub(crate) fn expr_name(e: &Expr) -> &str {
    match e {
        Expr::Meta { .. } => "meta",
        Expr::Cmp { .. } => "cmp",
        Expr::Payload { .. } => "payload",
        Expr::Bitwise { .. } => "bitwise",
        Expr::Lookup { .. } => "lookup",
        Expr::Immediate { .. } => "immediate",
        Expr::Nat { .. } => "nat",
        Expr::Masq { .. } => "masq",
        Expr::Counter { .. } => "counter",
        Expr::Ct { .. } => "ct",
        Expr::Fib { .. } => "fib",
        Expr::Objref { .. } => "objref",
        Expr::Log { .. } => "log",
        Expr::Unknown { name } => name,
    }
}
