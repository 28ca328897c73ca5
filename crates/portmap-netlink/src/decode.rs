//! Attribute → object decoding of the kernel's dump replies: tables, chains, rules (with every
//! [`Expr`] this crate models; anything else becomes [`Expr::Unknown`]), sets, elements and the
//! generation id.
//!
//! Objects of other tables are skipped before they are interpreted, so a foreign table using
//! features this crate does not model never breaks a dump of ours. It must not judge what it
//! decodes (that is the caller's `observe`), and it allocates only what the objects own.

use crate::attr::{Attr, Attrs, Msg};
use crate::consts::{
    NF_ACCEPT, NF_DROP, NFT_BITWISE_BOOL, NFT_CONTINUE, NFT_GOTO, NFT_JUMP, NFT_LOOKUP_F_INV, NFT_RETURN,
    NFTA_BITWISE_DREG, NFTA_BITWISE_LEN, NFTA_BITWISE_MASK, NFTA_BITWISE_OP, NFTA_BITWISE_SREG,
    NFTA_BITWISE_XOR, NFTA_CHAIN_HANDLE, NFTA_CHAIN_HOOK, NFTA_CHAIN_NAME, NFTA_CHAIN_POLICY,
    NFTA_CHAIN_TABLE, NFTA_CHAIN_TYPE, NFTA_CHAIN_USERDATA, NFTA_CMP_DATA, NFTA_CMP_OP, NFTA_CMP_SREG,
    NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS, NFTA_CT_DIRECTION, NFTA_CT_DREG, NFTA_CT_KEY, NFTA_DATA_VALUE,
    NFTA_DATA_VERDICT, NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_FIB_DREG, NFTA_FIB_FLAGS, NFTA_FIB_RESULT,
    NFTA_GEN_ID, NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY, NFTA_IMMEDIATE_DATA, NFTA_IMMEDIATE_DREG,
    NFTA_LIST_ELEM, NFTA_LOOKUP_DREG, NFTA_LOOKUP_FLAGS, NFTA_LOOKUP_SET, NFTA_LOOKUP_SET_ID,
    NFTA_LOOKUP_SREG, NFTA_MASQ_FLAGS, NFTA_META_DREG, NFTA_META_KEY, NFTA_NAT_FAMILY, NFTA_NAT_FLAGS,
    NFTA_NAT_REG_ADDR_MAX, NFTA_NAT_REG_ADDR_MIN, NFTA_NAT_REG_PROTO_MAX, NFTA_NAT_REG_PROTO_MIN,
    NFTA_NAT_TYPE, NFTA_PAYLOAD_BASE, NFTA_PAYLOAD_DREG, NFTA_PAYLOAD_LEN, NFTA_PAYLOAD_OFFSET,
    NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_HANDLE, NFTA_RULE_TABLE, NFTA_RULE_USERDATA,
    NFTA_SET_DATA_LEN, NFTA_SET_DATA_TYPE, NFTA_SET_DESC, NFTA_SET_DESC_CONCAT, NFTA_SET_ELEM_DATA,
    NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END, NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_USERDATA, NFTA_SET_FIELD_LEN, NFTA_SET_FLAGS, NFTA_SET_HANDLE, NFTA_SET_ID,
    NFTA_SET_KEY_LEN, NFTA_SET_KEY_TYPE, NFTA_SET_NAME, NFTA_SET_TABLE, NFTA_SET_USERDATA, NFTA_TABLE_FLAGS,
    NFTA_TABLE_HANDLE, NFTA_TABLE_NAME, NFTA_TABLE_OWNER, NFTA_TABLE_USERDATA, NFTA_VERDICT_CHAIN,
    NFTA_VERDICT_CODE,
};
use crate::consts::{
    NFTA_LIMIT_BURST, NFTA_LIMIT_FLAGS, NFTA_LIMIT_RATE, NFTA_LIMIT_TYPE, NFTA_LIMIT_UNIT, NFTA_LOG_GROUP,
    NFTA_LOG_PREFIX, NFTA_OBJ_DATA, NFTA_OBJ_HANDLE, NFTA_OBJ_NAME, NFTA_OBJ_TABLE, NFTA_OBJ_TYPE,
    NFTA_OBJ_USERDATA, NFTA_OBJREF_SET_ID, NFTA_OBJREF_SET_NAME, NFTA_OBJREF_SET_SREG, NFTA_SET_ELEM_OBJREF,
    NFTA_SET_OBJ_TYPE,
};
use crate::error::Error;
use crate::object::{
    BaseChain, Chain, CmpOp, Data, Element, Expr, Family, Hook, MetaKey, NatType, Object, ObjectKind,
    PayloadBase, Policy, Register, Rule, Set, Table, Verdict, object_type,
};

/// Calls `f` for each attribute of a stream, stopping at the first malformed one.
fn each<'a>(attrs: Attrs<'a>, mut f: impl FnMut(Attr<'a>) -> Result<(), Error>) -> Result<(), Error> {
    for a in attrs {
        f(a?)?;
    }
    Ok(())
}

fn required<T>(v: Option<T>, what: &str) -> Result<T, Error> {
    v.ok_or_else(|| Error::decode(format!("missing {what}")))
}

fn reg(a: Attr<'_>) -> Result<Register, Error> {
    let n = a.u32()?;
    Register::from_number(n).ok_or_else(|| Error::decode(format!("unknown register {n}")))
}

/// The bytes of `NFTA_DATA_VALUE` inside a data nest.
fn value(a: Attr<'_>) -> Result<&[u8], Error> {
    for inner in a.nested() {
        let inner = inner?;
        if inner.ty == NFTA_DATA_VALUE {
            return Ok(inner.data);
        }
    }
    Err(Error::decode("data without a value"))
}

fn verdict(a: Attr<'_>) -> Result<Verdict, Error> {
    let mut code = None;
    let mut chain = None;
    each(a.nested(), |v| {
        match v.ty {
            NFTA_VERDICT_CODE => code = Some(v.i32()?),
            NFTA_VERDICT_CHAIN => chain = Some(v.string()?),
            _ => {}
        }
        Ok(())
    })?;
    let code = required(code, "verdict code")?;
    Ok(match (code, chain) {
        (NF_ACCEPT, _) => Verdict::Accept,
        (NF_DROP, _) => Verdict::Drop,
        (NFT_CONTINUE, _) => Verdict::Continue,
        (NFT_RETURN, _) => Verdict::Return,
        (NFT_JUMP, Some(c)) => Verdict::Jump(c),
        (NFT_GOTO, Some(c)) => Verdict::Goto(c),
        (code, _) => return Err(Error::decode(format!("unsupported verdict code {code}"))),
    })
}

fn data(a: Attr<'_>) -> Result<Data, Error> {
    for inner in a.nested() {
        let inner = inner?;
        match inner.ty {
            NFTA_DATA_VALUE => return Ok(Data::Value(inner.data.to_vec())),
            NFTA_DATA_VERDICT => return Ok(Data::Verdict(verdict(inner)?)),
            _ => {}
        }
    }
    Err(Error::decode("data without a value or verdict"))
}

fn family(msg: &Msg<'_>) -> Option<Family> {
    Family::from_number(msg.family())
}

/// A table, or `None` for a family this crate does not model (netdev, bridge, arp).
pub(crate) fn table(msg: &Msg<'_>) -> Result<Option<Table>, Error> {
    let Some(family) = family(msg) else {
        return Ok(None);
    };
    let (mut name, mut flags, mut userdata, mut handle, mut owner) = (None, 0, None, None, None);
    each(msg.attrs(), |a| {
        match a.ty {
            NFTA_TABLE_NAME => name = Some(a.string()?),
            NFTA_TABLE_FLAGS => flags = a.u32()?,
            NFTA_TABLE_USERDATA => userdata = Some(a.data.to_vec()),
            NFTA_TABLE_HANDLE => handle = Some(a.u64()?),
            NFTA_TABLE_OWNER => owner = Some(a.u32()?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(Some(Table {
        family,
        name: required(name, "table name")?,
        flags,
        userdata,
        handle,
        owner,
    }))
}

/// A chain of `want_table`, `None` for chains of other tables.
pub(crate) fn chain(msg: &Msg<'_>, want_table: &str) -> Result<Option<Chain>, Error> {
    let Some(family) = family(msg) else {
        return Ok(None);
    };
    let mut table = None;
    let (mut name, mut hook, mut policy, mut chain_type, mut userdata, mut handle) =
        (None, None, None, None, None, None);
    each(msg.attrs(), |a| {
        match a.ty {
            NFTA_CHAIN_TABLE => table = Some(a.str()?),
            NFTA_CHAIN_NAME => name = Some(a),
            NFTA_CHAIN_HOOK => hook = Some(a),
            NFTA_CHAIN_POLICY => policy = Some(a),
            NFTA_CHAIN_TYPE => chain_type = Some(a),
            NFTA_CHAIN_USERDATA => userdata = Some(a.data.to_vec()),
            NFTA_CHAIN_HANDLE => handle = Some(a.u64()?),
            _ => {}
        }
        Ok(())
    })?;
    if table != Some(want_table) {
        return Ok(None);
    }
    let name = required(name, "chain name")?.string()?;
    let base = match hook {
        None => None,
        Some(h) => {
            let (mut num, mut prio) = (None, None);
            each(h.nested(), |a| {
                match a.ty {
                    NFTA_HOOK_HOOKNUM => num = Some(a.u32()?),
                    NFTA_HOOK_PRIORITY => prio = Some(a.i32()?),
                    _ => {}
                }
                Ok(())
            })?;
            let num = required(num, "hook number")?;
            let hook = Hook::from_number(num);
            let policy = match policy {
                Some(p) => {
                    let n = p.u32()?;
                    Policy::from_number(n).ok_or_else(|| Error::decode(format!("chain policy {n}")))?
                }
                None => Policy::Accept,
            };
            Some(BaseChain {
                hook,
                priority: required(prio, "hook priority")?,
                chain_type: match chain_type {
                    Some(t) => t.string()?,
                    None => "filter".to_owned(),
                },
                policy,
            })
        }
    };
    Ok(Some(Chain {
        family,
        table: want_table.to_owned(),
        name,
        base,
        userdata,
        handle,
    }))
}

/// A rule of `want_table`, `None` for rules of other tables.
pub(crate) fn rule(msg: &Msg<'_>, want_table: &str) -> Result<Option<Rule>, Error> {
    let Some(family) = family(msg) else {
        return Ok(None);
    };
    let (mut table, mut chain, mut exprs, mut userdata, mut handle) = (None, None, None, None, None);
    each(msg.attrs(), |a| {
        match a.ty {
            NFTA_RULE_TABLE => table = Some(a.str()?),
            NFTA_RULE_CHAIN => chain = Some(a.string()?),
            NFTA_RULE_EXPRESSIONS => exprs = Some(a),
            NFTA_RULE_USERDATA => userdata = Some(a.data.to_vec()),
            NFTA_RULE_HANDLE => handle = Some(a.u64()?),
            _ => {}
        }
        Ok(())
    })?;
    if table != Some(want_table) {
        return Ok(None);
    }
    let mut list = Vec::new();
    if let Some(exprs) = exprs {
        each(exprs.nested(), |e| {
            if e.ty == NFTA_LIST_ELEM {
                list.push(expr(e)?);
            }
            Ok(())
        })?;
    }
    Ok(Some(Rule {
        family,
        table: want_table.to_owned(),
        chain: required(chain, "rule chain")?,
        exprs: list,
        userdata,
        handle,
    }))
}

/// One expression. What this crate does not model comes back as [`Expr::Unknown`].
fn expr(elem: Attr<'_>) -> Result<Expr, Error> {
    let (mut name, mut body) = (None, None);
    each(elem.nested(), |a| {
        match a.ty {
            NFTA_EXPR_NAME => name = Some(a.str()?),
            NFTA_EXPR_DATA => body = Some(a),
            _ => {}
        }
        Ok(())
    })?;
    let name = required(name, "expression name")?;
    let parsed = match body {
        Some(body) => expr_body(name, body)?,
        None => None,
    };
    Ok(parsed.unwrap_or_else(|| Expr::Unknown {
        name: name.to_owned(),
    }))
}

/// The attributes of an expression body by type (types above 15 are ignored).
fn by_type(body: Attr<'_>) -> Result<[Option<Attr<'_>>; 16], Error> {
    let mut out = [None; 16];
    each(body.nested(), |a| {
        if let Some(slot) = out.get_mut(usize::from(a.ty)) {
            *slot = Some(a);
        }
        Ok(())
    })?;
    Ok(out)
}

fn opt_reg(a: Option<Attr<'_>>) -> Result<Option<Register>, Error> {
    a.map(reg).transpose()
}

fn u32_or(a: Option<Attr<'_>>, default: u32) -> Result<u32, Error> {
    a.map_or(Ok(default), |a| a.u32())
}

fn expr_body(name: &str, body: Attr<'_>) -> Result<Option<Expr>, Error> {
    let a = by_type(body)?;
    let get = |ty: u16, what: &str| required(a[usize::from(ty)], what);
    Ok(Some(match name {
        "meta" => {
            let Some(dreg) = a[usize::from(NFTA_META_DREG)] else {
                return Ok(None); // meta set: not modelled
            };
            Expr::Meta {
                key: MetaKey::from_number(get(NFTA_META_KEY, "meta key")?.u32()?),
                dreg: reg(dreg)?,
            }
        }
        "cmp" => {
            let op = get(NFTA_CMP_OP, "cmp op")?.u32()?;
            let Some(op) = CmpOp::from_number(op) else {
                return Ok(None);
            };
            Expr::Cmp {
                sreg: reg(get(NFTA_CMP_SREG, "cmp sreg")?)?,
                op,
                data: value(get(NFTA_CMP_DATA, "cmp data")?)?.to_vec(),
            }
        }
        "payload" => {
            let Some(dreg) = a[usize::from(NFTA_PAYLOAD_DREG)] else {
                return Ok(None); // payload set: not modelled
            };
            let Some(base) = PayloadBase::from_number(get(NFTA_PAYLOAD_BASE, "base")?.u32()?) else {
                return Ok(None);
            };
            Expr::Payload {
                base,
                offset: get(NFTA_PAYLOAD_OFFSET, "payload offset")?.u32()?,
                len: get(NFTA_PAYLOAD_LEN, "payload len")?.u32()?,
                dreg: reg(dreg)?,
            }
        }
        "bitwise" => {
            if u32_or(a[usize::from(NFTA_BITWISE_OP)], NFT_BITWISE_BOOL)? != NFT_BITWISE_BOOL {
                return Ok(None); // shifts: not modelled
            }
            Expr::Bitwise {
                sreg: reg(get(NFTA_BITWISE_SREG, "bitwise sreg")?)?,
                dreg: reg(get(NFTA_BITWISE_DREG, "bitwise dreg")?)?,
                len: get(NFTA_BITWISE_LEN, "bitwise len")?.u32()?,
                mask: value(get(NFTA_BITWISE_MASK, "bitwise mask")?)?.to_vec(),
                xor: value(get(NFTA_BITWISE_XOR, "bitwise xor")?)?.to_vec(),
            }
        }
        "lookup" => Expr::Lookup {
            sreg: reg(get(NFTA_LOOKUP_SREG, "lookup sreg")?)?,
            dreg: opt_reg(a[usize::from(NFTA_LOOKUP_DREG)])?,
            set: get(NFTA_LOOKUP_SET, "lookup set")?.string()?,
            set_id: u32_or(a[usize::from(NFTA_LOOKUP_SET_ID)], 0)?,
            invert: u32_or(a[usize::from(NFTA_LOOKUP_FLAGS)], 0)? & NFT_LOOKUP_F_INV != 0,
        },
        "immediate" => {
            let d = get(NFTA_IMMEDIATE_DATA, "immediate data")?;
            let Ok(d) = data(d) else {
                return Ok(None); // e.g. a verdict this crate does not model
            };
            Expr::Immediate {
                dreg: reg(get(NFTA_IMMEDIATE_DREG, "immediate dreg")?)?,
                data: d,
            }
        }
        "nat" => {
            let Some(nat_type) = NatType::from_number(get(NFTA_NAT_TYPE, "nat type")?.u32()?) else {
                return Ok(None);
            };
            Expr::Nat {
                nat_type,
                family: get(NFTA_NAT_FAMILY, "nat family")?.u32()? as u8,
                addr_min: opt_reg(a[usize::from(NFTA_NAT_REG_ADDR_MIN)])?,
                addr_max: opt_reg(a[usize::from(NFTA_NAT_REG_ADDR_MAX)])?,
                proto_min: opt_reg(a[usize::from(NFTA_NAT_REG_PROTO_MIN)])?,
                proto_max: opt_reg(a[usize::from(NFTA_NAT_REG_PROTO_MAX)])?,
                flags: u32_or(a[usize::from(NFTA_NAT_FLAGS)], 0)?,
            }
        }
        "masq" => Expr::Masq {
            flags: u32_or(a[usize::from(NFTA_MASQ_FLAGS)], 0)?,
        },
        "counter" => Expr::Counter {
            bytes: a[usize::from(NFTA_COUNTER_BYTES)].map_or(Ok(0), |a| a.u64())?,
            packets: a[usize::from(NFTA_COUNTER_PACKETS)].map_or(Ok(0), |a| a.u64())?,
        },
        "ct" => {
            let Some(dreg) = a[usize::from(NFTA_CT_DREG)] else {
                return Ok(None); // ct set: not modelled
            };
            Expr::Ct {
                key: get(NFTA_CT_KEY, "ct key")?.u32()?,
                dreg: reg(dreg)?,
                direction: a[usize::from(NFTA_CT_DIRECTION)].map(|a| a.u8()).transpose()?,
            }
        }
        "fib" => Expr::Fib {
            flags: get(NFTA_FIB_FLAGS, "fib flags")?.u32()?,
            result: get(NFTA_FIB_RESULT, "fib result")?.u32()?,
            dreg: reg(get(NFTA_FIB_DREG, "fib dreg")?)?,
        },
        "objref" => {
            // The immediate form (`counter name "x"`) is not modelled.
            let (Some(sreg), Some(set)) = (
                a[usize::from(NFTA_OBJREF_SET_SREG)],
                a[usize::from(NFTA_OBJREF_SET_NAME)],
            ) else {
                return Ok(None);
            };
            Expr::Objref {
                sreg: reg(sreg)?,
                set: set.string()?,
                set_id: u32_or(a[usize::from(NFTA_OBJREF_SET_ID)], 0)?,
            }
        }
        "log" => {
            // Only the group and prefix are modelled: a log with a level, flags, a snap length or a
            // queue threshold is something else.
            if (3..=6).any(|ty| a[ty].is_some()) {
                return Ok(None);
            }
            Expr::Log {
                group: a[usize::from(NFTA_LOG_GROUP)].map(|g| g.u16()).transpose()?,
                prefix: a[usize::from(NFTA_LOG_PREFIX)].map(|p| p.string()).transpose()?,
            }
        }
        _ => return Ok(None),
    }))
}

/// A set of `want_table`, `None` for sets of other tables.
pub(crate) fn set(msg: &Msg<'_>, want_table: &str) -> Result<Option<Set>, Error> {
    let Some(family) = family(msg) else {
        return Ok(None);
    };
    let mut table = None;
    let mut name = None;
    let mut out = Set {
        family,
        table: String::new(),
        name: String::new(),
        flags: 0,
        key_type: 0,
        key_len: 0,
        data_type: None,
        data_len: None,
        id: 0,
        concat: Vec::new(),
        userdata: None,
        handle: None,
        obj_type: None,
    };
    each(msg.attrs(), |a| {
        match a.ty {
            NFTA_SET_TABLE => table = Some(a.str()?),
            NFTA_SET_NAME => name = Some(a),
            NFTA_SET_FLAGS => out.flags = a.u32()?,
            NFTA_SET_KEY_TYPE => out.key_type = a.u32()?,
            NFTA_SET_KEY_LEN => out.key_len = a.u32()?,
            NFTA_SET_DATA_TYPE => out.data_type = Some(a.u32()?),
            NFTA_SET_DATA_LEN => out.data_len = Some(a.u32()?),
            NFTA_SET_ID => out.id = a.u32()?,
            NFTA_SET_OBJ_TYPE => out.obj_type = Some(a.u32()?),
            NFTA_SET_USERDATA => out.userdata = Some(a.data.to_vec()),
            NFTA_SET_HANDLE => out.handle = Some(a.u64()?),
            NFTA_SET_DESC => {
                each(a.nested(), |d| {
                    if d.ty == NFTA_SET_DESC_CONCAT {
                        each(d.nested(), |field| {
                            each(field.nested(), |f| {
                                if f.ty == NFTA_SET_FIELD_LEN {
                                    out.concat.push(f.u32()?);
                                }
                                Ok(())
                            })
                        })?;
                    }
                    Ok(())
                })?;
            }
            _ => {}
        }
        Ok(())
    })?;
    if table != Some(want_table) {
        return Ok(None);
    }
    want_table.clone_into(&mut out.table);
    out.name = required(name, "set name")?.string()?;
    Ok(Some(out))
}

/// Appends the elements of one `NEWSETELEM` dump message.
pub(crate) fn elements(msg: &Msg<'_>, out: &mut Vec<Element>) -> Result<(), Error> {
    for a in msg.attrs() {
        let a = a?;
        if a.ty != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for e in a.nested() {
            let e = e?;
            if e.ty == NFTA_LIST_ELEM {
                out.push(element(e)?);
            }
        }
    }
    Ok(())
}

fn element(e: Attr<'_>) -> Result<Element, Error> {
    let mut key = None;
    let mut out = Element {
        key: Vec::new(),
        key_end: None,
        data: None,
        flags: 0,
        userdata: None,
        timeout: None,
        expiration: None,
    };
    each(e.nested(), |a| {
        match a.ty {
            NFTA_SET_ELEM_KEY => key = Some(value(a)?),
            NFTA_SET_ELEM_KEY_END => out.key_end = Some(value(a)?.to_vec()),
            NFTA_SET_ELEM_DATA => out.data = Some(data(a)?),
            NFTA_SET_ELEM_OBJREF => out.data = Some(Data::Object(a.string()?)),
            NFTA_SET_ELEM_FLAGS => out.flags = a.u32()?,
            NFTA_SET_ELEM_USERDATA => out.userdata = Some(a.data.to_vec()),
            crate::consts::NFTA_SET_ELEM_TIMEOUT => out.timeout = Some(a.u64()?),
            crate::consts::NFTA_SET_ELEM_EXPIRATION => out.expiration = Some(a.u64()?),
            _ => {}
        }
        Ok(())
    })?;
    // A catch-all element (`*`, flag NFT_SET_ELEM_CATCHALL) has no key.
    out.key = key.map(<[u8]>::to_vec).unwrap_or_default();
    Ok(out)
}

/// An object of `want_table`, `None` for objects of other tables.
pub(crate) fn object(msg: &Msg<'_>, want_table: &str) -> Result<Option<Object>, Error> {
    let Some(family) = family(msg) else {
        return Ok(None);
    };
    let (mut table, mut name, mut ty, mut data, mut userdata, mut handle) =
        (None, None, None, None, None, None);
    each(msg.attrs(), |a| {
        match a.ty {
            NFTA_OBJ_TABLE => table = Some(a.str()?),
            NFTA_OBJ_NAME => name = Some(a.string()?),
            NFTA_OBJ_TYPE => ty = Some(a.u32()?),
            NFTA_OBJ_DATA => data = Some(a),
            NFTA_OBJ_USERDATA => userdata = Some(a.data.to_vec()),
            NFTA_OBJ_HANDLE => handle = Some(a.u64()?),
            _ => {}
        }
        Ok(())
    })?;
    if table != Some(want_table) {
        return Ok(None);
    }
    let ty = required(ty, "object type")?;
    let by = match data {
        Some(d) => Some(by_type(d)?),
        None => None,
    };
    let field = |ty: u16| by.as_ref().and_then(|b| b[usize::from(ty)]);
    let kind = match ty {
        object_type::COUNTER => ObjectKind::Counter {
            packets: field(NFTA_COUNTER_PACKETS).map_or(Ok(0), |a| a.u64())?,
            bytes: field(NFTA_COUNTER_BYTES).map_or(Ok(0), |a| a.u64())?,
        },
        object_type::LIMIT => ObjectKind::Limit {
            rate: field(NFTA_LIMIT_RATE).map_or(Ok(0), |a| a.u64())?,
            unit: field(NFTA_LIMIT_UNIT).map_or(Ok(0), |a| a.u64())?,
            burst: u32_or(field(NFTA_LIMIT_BURST), 0)?,
            limit_type: u32_or(field(NFTA_LIMIT_TYPE), 0)?,
            flags: u32_or(field(NFTA_LIMIT_FLAGS), 0)?,
        },
        other => ObjectKind::Other(other),
    };
    Ok(Some(Object {
        family,
        table: want_table.to_owned(),
        name: required(name, "object name")?,
        kind,
        userdata,
        handle,
    }))
}

/// `NFTA_GEN_ID` of a `NEWGEN` reply.
pub(crate) fn generation(msg: &Msg<'_>) -> Result<u32, Error> {
    for a in msg.attrs() {
        let a = a?;
        if a.ty == NFTA_GEN_ID {
            return a.u32();
        }
    }
    Err(Error::decode("generation reply without NFTA_GEN_ID"))
}
