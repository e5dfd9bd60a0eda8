"""A block's assignments as NumPy calls that write into arrays allocated before the loop.

Three passes over a block:
1. places: every symbol of the step lives in the slot of a stacked array (layout.py), in the
   slice of a sequence at step t, in an array of its own, or, for a plain copy, where the value
   it copies lives;
2. schedule: the assignments are reordered, reads after writes, so that one computation on
   neighbouring slots of stacked arrays comes together; it becomes one statement over a slice
   (the LSTM's three sigmoids become one call on gates[:, 0 * H : 3 * H]);
3. lower: a statement becomes NumPy calls with out=, subexpressions going to scratch arrays.
   A statement may write where one of its operands lives (a gate's activation over its
   pre-activation): the operand is then read by the first call, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy

from ...reductions import units_size
from .layout import Layout


@dataclass(frozen=True)
class Place:
    """Where a value of one step lives: a slot of a stacked array, or a (B, H) array's name."""

    stack: str | None
    slot: int = 0
    name: str = ""

    @property
    def key(self) -> tuple:
        return (self.stack, self.slot) if self.stack else (None, self.name)


@dataclass
class Statement:
    target: str
    expr: sympy.Expr
    comments: list[str]
    index: int  # position in the block, to keep the original order among equals
    key: tuple | None = None  # statements with one key on neighbouring slots merge


@dataclass
class Scratch:
    """Arrays for subexpressions, reused by every statement: (B, width unit) each, unit the
    size of the values (H or a declared size)."""

    namer: Callable[[str], str] = str  # makes a scratch array's name unique
    names: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # (unit, width) ->
    busy: set[str] = field(default_factory=set)

    def take(self, width: int, unit: str = "H") -> str:
        names = self.names.setdefault((unit, width), [])
        for name in names:
            if name not in self.busy:
                self.busy.add(name)
                return name
        name = self.namer(f"tmp{sum(len(v) for v in self.names.values())}")
        names.append(name)
        self.busy.add(name)
        return name

    def release(self, name: str) -> None:
        self.busy.discard(name)


def slice_text(stack: str, first: int, width: int, stack_width: int, unit: str = "H") -> str:
    """The columns of slots first .. first + width - 1 of a per-step stacked array whose slots
    are `unit` numbers wide."""
    if width == stack_width:
        return stack
    return f"{stack}[:, {first} * {unit} : {first + width} * {unit}]"


class Lowering:
    """Turns the statements of one block into lines of NumPy calls."""

    def __init__(
        self,
        layout: Layout,
        place: Callable[[str], Place],
        name: Callable[[str], str],
        functions: Callable[[str], str],
        number: Callable[[sympy.Number], str],
        scratch: Scratch,
    ) -> None:
        self.layout = layout
        self.place = place
        self.name = name  # the Python name of a symbol bound in the step
        self.functions = functions
        self.number = number
        self.scratch = scratch
        self.unit = "H"  # the size of the values of the block being lowered
        self.bound: set[str] = set()  # symbols whose name the step must bind to their place
        self.stacks_used: set[str] = set()  # stacked arrays the step reads or writes whole

    # scheduling and merging -----------------------------------------------------------------

    def merge_key(self, st: Statement) -> tuple | None:
        """Equal for statements that compute the same thing on slots at the same offsets."""
        target = self.place(st.target)
        if target.stack is None:
            return None
        subs = {}
        for sym in st.expr.free_symbols:
            p = self.place(sym.name)
            if p.stack is None:
                return None  # a (B, H) operand cannot be spread over several slots
            if p.stack == target.stack and p.slot != target.slot:
                return None  # merged, it would overlap what it writes
            subs[sym] = sympy.Symbol(f"{p.stack}@{p.slot - target.slot}")
        return (target.stack, sympy.srepr(st.expr.xreplace(subs)))

    def schedule(self, statements: list[Statement]) -> list[list[Statement]]:
        """Statements in an order that respects reads after writes, merged where possible."""
        for st in statements:
            st.key = self.merge_key(st)
        defined = {st.target for st in statements}
        needs = {st.target: {s.name for s in st.expr.free_symbols} & defined for st in statements}
        remaining, done, out = list(statements), set(), []
        while remaining:
            ready = [st for st in remaining if needs[st.target] <= done]
            chosen = None
            for st in ready:  # a whole family is ready: emit it at once
                family = [r for r in remaining if st.key is not None and r.key == st.key]
                if len(family) > 1 and all(r in ready for r in family):
                    chosen = family
                    break
            if chosen is None:  # else something that waits for no partner
                alone = [
                    st
                    for st in ready
                    if st.key is None or sum(r.key == st.key for r in remaining) == 1
                ]
                chosen = [(alone or ready)[0]]
            for run in self._runs(chosen):
                out.append(run)
            for st in chosen:
                remaining.remove(st)
                done.add(st.target)
        return out

    def _runs(self, family: list[Statement]) -> list[list[Statement]]:
        """Split a family into runs of consecutive slots."""
        family = sorted(family, key=lambda st: self.place(st.target).slot)
        runs: list[list[Statement]] = []
        for st in family:
            slot = self.place(st.target).slot
            if runs and self.place(runs[-1][-1].target).slot == slot - 1:
                runs[-1].append(st)
            else:
                runs.append([st])
        return runs

    # lowering -------------------------------------------------------------------------------

    def lower(self, run: list[Statement]) -> list[str]:
        """The lines of one (possibly merged) statement."""
        first = run[0]
        width = len(run)
        target = self.place(first.target)
        lines = [f"# {c}" for st in run for c in st.comments]
        if width == 1:
            out = self.text(first.target)
        else:
            stack = self.layout.stacks[target.stack]
            out = slice_text(target.stack, target.slot, width, stack.width, stack.unit)
            self.stacks_used.add(target.stack)

        def leaf(sym: sympy.Symbol) -> str:
            if width == 1:
                return self.text(sym.name)
            p = self.place(sym.name)
            stack = self.layout.stacks[p.stack]
            self.stacks_used.add(p.stack)
            return slice_text(p.stack, p.slot, width, stack.width, stack.unit)

        def same_place(sym: sympy.Symbol) -> bool:
            return self.place(sym.name).key == target.key

        body = _Writer(self, leaf, same_place, width).write(first.expr, out)
        names = ", ".join(st.target for st in run)
        if width > 1 and body:
            body[-1] += f"  # {names}"
        return lines + body

    def text(self, sym: str) -> str:
        """The name of a symbol in the step; the step binds it to its place."""
        if units_size(sympy.Symbol(sym, integer=True, positive=True)) is not None:
            return sym[1:]  # a number of units, `_H`: the size itself
        self.bound.add(sym)
        return self.name(sym)


class _Writer:
    """NumPy calls that compute an expression into an array (`out`)."""

    def __init__(self, lowering: Lowering, leaf, same_place, width: int) -> None:
        self.lo = lowering
        self.leaf = leaf
        self.same_place = same_place
        self.width = width

    def write(self, expr: sympy.Expr, out: str) -> list[str]:
        if isinstance(expr, sympy.Symbol):
            text = self.leaf(expr)
            return [] if text == out or self.same_place(expr) else [f"np.copyto({out}, {text})"]
        if expr.is_Number:
            return [f"{out}[...] = {self.lo.number(expr)}"]
        if isinstance(expr, sympy.Function):
            (arg,) = expr.args
            function = self.lo.functions(type(expr).__name__)
            if isinstance(arg, sympy.Symbol):
                return [f"{function}({self.leaf(arg)}, out={out})"]
            return [*self.write(arg, out), f"{function}({out}, out={out})"]
        if isinstance(expr, sympy.Add):
            return self._sum(expr, out)
        if isinstance(expr, sympy.Mul):
            return self._product(expr, out)
        if isinstance(expr, sympy.Pow):
            return self._power(expr, out)
        raise ValueError(f"cannot write {expr} with NumPy calls")

    def _operands(
        self, exprs: list[sympy.Expr], out: str, carrier: int
    ) -> tuple[list[str], list[str], list[str]]:
        """Texts of operands: names, numbers, or arrays computed first; the operand at index
        `carrier` (if >= 0) is computed into `out` itself, the others into scratch arrays."""
        texts, lines, taken = [], [], []
        for k, e in enumerate(exprs):
            if isinstance(e, sympy.Symbol):
                texts.append(self.leaf(e))
            elif e.is_Number:
                texts.append(self.lo.number(e))
            elif k == carrier:
                texts.append(out)
            else:
                name = self.lo.scratch.take(self.width, self.lo.unit)
                taken.append(name)
                lines += self.write(e, name)
                texts.append(name)
        if carrier >= 0:  # last, so that the others still read what `out` held
            lines += self.write(exprs[carrier], out)
        return texts, lines, taken

    @staticmethod
    def _carrier(exprs: list[sympy.Expr], alias: int) -> int:
        """The compound operand to compute in `out`: none when an operand lives in `out`."""
        if alias >= 0:
            return -1
        for k, e in enumerate(exprs[:2]):
            if not isinstance(e, sympy.Symbol) and not e.is_Number:
                return k
        return -1

    def _first(self, exprs: list[sympy.Expr]) -> int:
        """The operand that lives where the result goes must be read by the first call."""
        for k, e in enumerate(exprs):
            if isinstance(e, sympy.Symbol) and self.same_place(e):
                return k
        return -1

    def _sum(self, expr: sympy.Add, out: str) -> list[str]:
        terms = sorted(expr.args, key=_term_order)
        signed = [(t.could_extract_minus_sign(), -t if t.could_extract_minus_sign() else t)
                  for t in terms]  # fmt: skip
        if all(neg for neg, _ in signed):  # -(a + b + ...)
            return [*self.write(sympy.Add(*[e for _, e in signed]), out),
                    f"np.negative({out}, out={out})"]  # fmt: skip
        k = self._first([e for _, e in signed])
        if k > 0:  # the operand that lives in `out` goes into the first call
            signed.insert(0, signed.pop(k))
        if signed[0][0]:  # the first call starts from a positive term
            j = next(j for j, (neg, _) in enumerate(signed) if not neg)
            signed.insert(0, signed.pop(j))
        exprs = [e for _, e in signed]
        carrier = self._carrier(exprs, self._first(exprs))
        texts, lines, taken = self._operands(exprs, out, carrier)
        negs = [neg for neg, _ in signed]
        if len(texts) == 1:
            lines.append(f"np.copyto({out}, {texts[0]})" if texts[0] != out else "")
        else:
            op = "subtract" if negs[1] else "add"
            lines.append(f"np.{op}({texts[0]}, {texts[1]}, out={out})")
            for neg, text in zip(negs[2:], texts[2:], strict=True):
                lines.append(f"np.{'subtract' if neg else 'add'}({out}, {text}, out={out})")
        for name in taken:
            self.lo.scratch.release(name)
        return [line for line in lines if line]

    def _product(self, expr: sympy.Mul, out: str) -> list[str]:
        coeff, factors = expr.as_coeff_mul()
        numer = [f for f in factors if not (f.is_Pow and f.exp.is_negative)]
        denom = [f.base ** (-f.exp) for f in factors if f.is_Pow and f.exp.is_negative]
        k = self._first(numer)
        if k > 0:
            numer.insert(0, numer.pop(k))
        elif k < 0:  # a compound factor first: it is computed in `out`
            compound = [j for j, f in enumerate(numer) if not isinstance(f, sympy.Symbol)]
            if compound:
                numer.insert(0, numer.pop(compound[0]))
        carrier = self._carrier(numer, k) if numer else -1
        texts, lines, taken = self._operands(numer + denom, out, carrier)
        nums, dens = texts[: len(numer)], texts[len(numer) :]
        if not nums:
            lines.append(f"np.divide(1, {dens[0]}, out={out})")
            dens = dens[1:]
        elif len(nums) == 1 and coeff == -1 and not dens:
            lines.append(f"np.negative({nums[0]}, out={out})")
            coeff = sympy.S.One
        elif len(nums) == 1 and coeff != 1 and not dens:
            lines.append(f"np.multiply({nums[0]}, {self.lo.number(coeff)}, out={out})")
            coeff = sympy.S.One
        elif len(nums) == 1:
            if dens:
                lines.append(f"np.divide({nums[0]}, {dens[0]}, out={out})")
                dens = dens[1:]
            elif nums[0] != out:
                lines.append(f"np.copyto({out}, {nums[0]})")
        else:
            lines.append(f"np.multiply({nums[0]}, {nums[1]}, out={out})")
            for text in nums[2:]:
                lines.append(f"np.multiply({out}, {text}, out={out})")
        for text in dens:
            lines.append(f"np.divide({out}, {text}, out={out})")
        if coeff == -1:
            lines.append(f"np.negative({out}, out={out})")
        elif coeff != 1:
            lines.append(f"np.multiply({out}, {self.lo.number(coeff)}, out={out})")
        for name in taken:
            self.lo.scratch.release(name)
        return lines

    def _power(self, expr: sympy.Pow, out: str) -> list[str]:
        base, exp = expr.args
        if not exp.is_Integer or exp == 0:
            raise ValueError(f"cannot write the power {expr} with NumPy calls")
        n = int(exp)
        texts, lines, taken = self._operands([base], out, -1)
        (b,) = texts
        lines.append(f"np.multiply({b}, {b}, out={out})" if abs(n) > 1 else
                     f"np.copyto({out}, {b})")  # fmt: skip
        for _ in range(abs(n) - 2):
            lines.append(f"np.multiply({out}, {b}, out={out})")
        if n < 0:
            lines.append(f"np.divide(1, {out}, out={out})")
        for name in taken:
            self.lo.scratch.release(name)
        return lines


def _term_order(term: sympy.Expr) -> tuple:
    """Positive terms first, then by SymPy's stable key: deterministic output."""
    return (term.could_extract_minus_sign(), sympy.default_sort_key(term))
