//! The filter's expression tree.

/// What a comparison looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Operand {
    Arg(u8),
    Ret,
    Pid,
    Tid,
    Comm,
    Func,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Literal {
    Int(i128),
    Text(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Comparison {
    pub(super) operand: Operand,
    /// `argN:TYPE` / `ret:TYPE`: how the value is read, said in the filter.
    pub(super) typed: Option<super::ValueType>,
    pub(super) op: Op,
    pub(super) value: Literal,
}

#[derive(Debug)]
pub(super) enum Expr {
    Cmp(Comparison),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}
