//! portmap facade (wip)
