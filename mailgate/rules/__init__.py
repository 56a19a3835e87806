"""Help topics and routing rules: conditions and schema (validated at load), binding names to objects
(``resolve``), the pure evaluation engine and its gates, RE2 patterns.

May import only the vocabulary (``mailgate.domain``, ``hours``, ``yamlfile``, ...): ``config`` is
built on the rules, never the other way round.
"""

from mailgate.rules.engine import CompiledRules, Facts
from mailgate.rules.schema import HelpTopic, Rule, RulesFile

__all__ = ["CompiledRules", "Facts", "HelpTopic", "Rule", "RulesFile"]
