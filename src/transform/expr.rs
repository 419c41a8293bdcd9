//! Arithmetic expressions over a row's numbers: `price * qty`, `(a + b) / 2`,
//! `amount * 1.21`. Names are identifiers or `` `back-quoted names` ``.

/// A parsed expression whose names are resolved to slots.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A number.
    Num(f64),
    /// The value in slot n.
    Slot(usize),
    /// Negation.
    Neg(Box<Expr>),
    /// A binary operation.
    Bin(Op, Box<Expr>, Box<Expr>),
}

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

/// Why an expression has no value for a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvalError {
    /// A name's value is missing (empty) in this row.
    Missing(usize),
    /// Division by zero, or a result too large for a float.
    NotFinite,
}

impl Expr {
    /// Parses `text`, resolving each name with `slot` (which fails for unknown names).
    pub fn parse(text: &str, slot: &mut impl FnMut(&str) -> Result<usize, String>) -> Result<Expr, String> {
        let mut p = Parser { s: text.as_bytes(), pos: 0, slot, depth: 0, operations: 0 };
        let e = p.sum()?;
        p.skip_ws();
        if p.pos != p.s.len() {
            return Err(format!("unexpected {:?} at offset {}", text[p.pos..].chars().next().unwrap_or(' '), p.pos));
        }
        Ok(e)
    }

    /// Evaluates with `values[slot]`.
    pub fn eval(&self, values: &[Option<f64>]) -> Result<f64, EvalError> {
        let v = match self {
            Expr::Num(n) => *n,
            Expr::Slot(i) => values[*i].ok_or(EvalError::Missing(*i))?,
            Expr::Neg(e) => -e.eval(values)?,
            Expr::Bin(op, a, b) => {
                let (a, b) = (a.eval(values)?, b.eval(values)?);
                match op {
                    Op::Add => a + b,
                    Op::Sub => a - b,
                    Op::Mul => a * b,
                    Op::Div => a / b,
                }
            }
        };
        if v.is_finite() {
            Ok(v)
        } else {
            Err(EvalError::NotFinite)
        }
    }
}

/// How deeply negations and parentheses may nest, and how many operations an
/// expression may have: parsing, evaluating and dropping an expression all
/// recurse, so these bound their stack use.
const MAX_DEPTH: usize = 64;
const MAX_OPERATIONS: usize = 256;

struct Parser<'a, F> {
    s: &'a [u8],
    pos: usize,
    slot: &'a mut F,
    depth: usize,
    operations: usize,
}

impl<F: FnMut(&str) -> Result<usize, String>> Parser<'_, F> {
    fn operation(&mut self) -> Result<(), String> {
        self.operations += 1;
        if self.operations > MAX_OPERATIONS {
            return Err(format!("the expression has more than {MAX_OPERATIONS} operations"));
        }
        Ok(())
    }

    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        while let Some(c @ (b'+' | b'-')) = self.peek() {
            self.pos += 1;
            self.operation()?;
            let op = if c == b'+' { Op::Add } else { Op::Sub };
            left = Expr::Bin(op, Box::new(left), Box::new(self.product()?));
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while let Some(c @ (b'*' | b'/')) = self.peek() {
            self.pos += 1;
            self.operation()?;
            let op = if c == b'*' { Op::Mul } else { Op::Div };
            left = Expr::Bin(op, Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("the expression nests more than {MAX_DEPTH} levels deep"));
        }
        let e = self.atom();
        self.depth -= 1;
        e
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                Ok(Expr::Neg(Box::new(self.unary()?)))
            }
            Some(b'(') => {
                self.pos += 1;
                let e = self.sum()?;
                if self.peek() != Some(b')') {
                    return Err(format!("missing ')' at offset {}", self.pos));
                }
                self.pos += 1;
                Ok(e)
            }
            Some(b'`') => {
                let start = self.pos + 1;
                let len = self.s[start..].iter().position(|&b| b == b'`').ok_or("a `name` is never closed")?;
                self.pos = start + len + 1;
                let name = std::str::from_utf8(&self.s[start..start + len]).map_err(|e| e.to_string())?;
                Ok(Expr::Slot((self.slot)(name)?))
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.pos;
                while self.pos < self.s.len()
                    && (self.s[self.pos].is_ascii_digit() || matches!(self.s[self.pos], b'.' | b'e' | b'E'))
                {
                    self.pos += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.pos]).expect("ASCII digits");
                text.parse().map(Expr::Num).map_err(|_| format!("{text:?} is not a number"))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                while self.pos < self.s.len() && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
                {
                    self.pos += 1;
                }
                let name = std::str::from_utf8(&self.s[start..self.pos]).expect("ASCII identifier");
                Ok(Expr::Slot((self.slot)(name)?))
            }
            Some(c) => Err(format!("unexpected {:?} at offset {}", c as char, self.pos)),
            None => Err("the expression ends too early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Expr, String> {
        let names = ["price", "qty", "unit price"];
        Expr::parse(text, &mut |n| names.iter().position(|&k| k == n).ok_or(format!("unknown column {n:?}")))
    }

    #[test]
    fn precedence_and_names() {
        let v = [Some(2.5), Some(4.0), Some(10.0)];
        for (text, want) in [
            ("price * qty", 10.0),
            ("price + qty * 2", 10.5),
            ("(price + qty) * 2", 13.0),
            ("-price + 1", -1.5),
            ("`unit price` / 4 - 1", 1.5),
            ("qty / 2 / 2", 1.0),
            ("1.21", 1.21),
            ("1e3 * price", 2500.0),
        ] {
            assert_eq!(parse(text).unwrap().eval(&v), Ok(want), "{text}");
        }
    }

    #[test]
    fn missing_values_and_division_by_zero() {
        let e = parse("price * qty").unwrap();
        assert_eq!(e.eval(&[Some(1.0), None, None]), Err(EvalError::Missing(1)));
        assert_eq!(parse("price / 0").unwrap().eval(&[Some(1.0), None, None]), Err(EvalError::NotFinite));
    }

    #[test]
    fn syntax_errors_say_where() {
        for (text, needle) in [
            ("price *", "ends too early"),
            ("price qty", "unexpected 'q' at offset 6"),
            ("(price", "missing ')'"),
            ("cost * 2", "unknown column \"cost\""),
            ("1.2.3", "not a number"),
            ("`open", "never closed"),
            ("price % 2", "unexpected '%'"),
            (&"-".repeat(10_000), "nests more than 64"),
            (&vec!["1"; 5000].join("+"), "more than 256 operations"),
            (&format!("{}1{}", "(".repeat(100), ")".repeat(100)), "nests more than 64"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
