"""Recognise placeholder credentials: text a template left for a person to replace.

A starter manifest says ``REPLACE-WITH-YOUR-PROVIDER-KEY``; applied unchanged, such a value must
never work as a caller's API key nor count as a usable provider key. The rule is deliberately
narrow (a whole value that reads as an instruction), so no random key can match it.
"""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(
    r"""^(
        (replace|change|insert|put|your|todo|fixme)([-_ ].*)?   # REPLACE-WITH-..., YOUR_KEY, TODO
      | changeme | placeholder
      | <[^>]*> | \$\{[^}]*\} | \{\{[^}]*\}\}                      # <key>, ${KEY}, {{ key }}
      | x{3,} | \*{3,} | \.{3,}                                     # xxxx, ****, ...
    )$""",
    re.IGNORECASE | re.VERBOSE,
)


def is_placeholder(value: str) -> bool:
    """Whether ``value`` (stripped) is a placeholder rather than a real credential."""
    return bool(_PLACEHOLDER.match(value.strip()))
