"""Help topics and routing rules: schema (validated at load) and the pure evaluation engine."""

from mailgate.rules.engine import CompiledRules, Facts
from mailgate.rules.schema import HelpTopic, Rule, RulesFile

__all__ = ["CompiledRules", "Facts", "HelpTopic", "Rule", "RulesFile"]
