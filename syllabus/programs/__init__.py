"""The MathQA operation language: tokens, parser, interpreter (no eval), decoding grammar."""

from syllabus.programs.execute import Execution, execute, solve, within
from syllabus.programs.language import extract_numbers, number_spans, parse, program_tokens, tokens_to_text
from syllabus.programs.ops import OPERATIONS, ProgramError

__all__ = ["OPERATIONS", "Execution", "ProgramError", "execute", "extract_numbers", "number_spans", "parse",
           "program_tokens", "solve", "tokens_to_text", "within"]
