"""The route language's syntax: `parse(text, file) -> SourceFile` (a tree with spans, no meaning) or
`RouteSyntaxError`. Meaning and checks live in `ccm.compile`; canonical printing in `ccm.dsl.printer` and
`ccm.dsl.format`."""

from ccm.dsl.parser import RouteSyntaxError, parse
from ccm.dsl.syntax import SourceFile

__all__ = ["RouteSyntaxError", "SourceFile", "parse"]
