"""The Query view's query bar: search text, then ``oklog query``'s term flags. Pure.

    GET /v1 -i -v health -where 'status>=500' -q orders

The text before the first flag is the search term exactly as typed (spaces and
quotes included: log lines hold both). After it, the flags of ``oklog query``
that choose records, with the same meaning and limits:

    -i            case-insensitive, for every term
    -v TERM       records holding TERM do not match (repeatable)
    -where EXPR   a condition on a JSON or logfmt field (repeatable)
    -q TERM       one more term that must match (repeatable)
    -regex        the terms are regular expressions

Flag arguments may be quoted ('...' or "..." with backslash escapes); a word
after the flags that is no flag argument is one more ``-q`` term. A flag is a
whole word: ``grep -vx`` searches for itself. To search for a flag's own text,
give it to ``-q``: ``-q "-v"``. Every error is a ``QueryBarError`` whose message
says what to type instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from oklog.query.engine import MAX_QUERY_LEN, QueryError
from oklog.query.fields import MAX_CONDITIONS, parse_condition
from oklog.query.params import MAX_TERMS

FLAGS = ("-i", "-v", "-where", "-q", "-regex")
_WITH_ARG = ("-v", "-where", "-q")
_FIRST_FLAG = re.compile(r"(?:^|(?<=\s))(?:-i|-v|-where|-q|-regex)(?=\s|$)")


class QueryBarError(ValueError):
    """The query bar's text cannot be run; the message says why."""


@dataclass(frozen=True)
class BarQuery:
    q: str = ""  # the first term (highlighted in the results)
    more: tuple[str, ...] = ()  # further terms that must all match
    without: tuple[str, ...] = ()
    where: tuple[str, ...] = ()
    icase: bool = False
    regex: bool = False  # -regex given in the bar (the checkbox is the other way)


def tokens(text: str) -> list[tuple[str, bool]]:
    """Whitespace-separated words, ``(word, quoted)``; quotes join and are removed."""
    out: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        word: list[str] = []
        quoted = False
        while i < n and not text[i].isspace():
            c = text[i]
            if c in "'\"":
                quoted = True
                end = i + 1
                while True:
                    if end >= n:
                        raise QueryBarError(f"unterminated {c} quote in {text[i:i + 40]!r}")
                    if c == '"' and text[end] == "\\" and end + 1 < n:
                        word.append(text[end + 1])
                        end += 2
                        continue
                    if text[end] == c:
                        break
                    word.append(text[end])
                    end += 1
                i = end + 1
            else:
                word.append(c)
                i += 1
        out.append(("".join(word), quoted))
    return out


def parse_bar(text: str) -> BarQuery:
    m = _FIRST_FLAG.search(text)
    head = (text if m is None else text[: m.start()]).strip()
    terms = [head] if head else []
    without: list[str] = []
    where: list[str] = []
    icase = regex = False
    words = tokens(text[m.start():]) if m is not None else []
    k = 0
    while k < len(words):
        word, quoted = words[k]
        k += 1
        if quoted or word not in FLAGS:
            terms.append(word)
            continue
        if word == "-i":
            icase = True
            continue
        if word == "-regex":
            regex = True
            continue
        if k >= len(words):
            raise QueryBarError(f"{word} needs a value: {word} TERM" if word != "-where"
                                else "-where needs a condition: -where 'status>=500'")
        value = words[k][0]
        k += 1
        if word == "-v":
            without.append(value)
        elif word == "-q":
            terms.append(value)
        else:
            where.append(_condition(value))
    _check_limits(terms, without, where)
    return BarQuery(terms[0] if terms else "", tuple(terms[1:]), tuple(without), tuple(where), icase, regex)


def _condition(value: str) -> str:
    """A ``-where`` value, checked as the node will parse it."""
    try:
        parse_condition(value)
    except QueryError as e:
        raise QueryBarError(str(e)) from None
    return value


def _check_limits(terms: list[str], without: list[str], where: list[str]) -> None:
    """``QueryBarError`` for more terms or conditions than a query takes, or an
    empty or oversized term."""
    for name, got, limit in (("search", terms, MAX_TERMS), ("-v", without, MAX_TERMS),
                             ("-where", where, MAX_CONDITIONS)):
        if len(got) > limit:
            raise QueryBarError(f"{len(got)} {name} terms; the limit is {limit}")
    for t in terms + without:
        if not t:
            raise QueryBarError("an empty term matches everything: leave it out")
        if len(t.encode()) > MAX_QUERY_LEN:
            raise QueryBarError(f"a term of {len(t.encode())} bytes; the limit is {MAX_QUERY_LEN}")
