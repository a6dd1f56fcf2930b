"""Data: embedded tasks (small, seeded, verifiable problems generated in code, no download) and the recipe's
`data:` section that reads the user's own datasets."""

from tokrl.data.arithmetic import ArithmeticTask, make_arithmetic_dataset
from tokrl.data.corrupted_sft import CorruptedArithmeticSFT
from tokrl.data.latex_problems import LatexProblemsTask
from tokrl.data.wordproblems import WordProblemsTask

TASKS = {"arithmetic": ArithmeticTask, "wordproblems": WordProblemsTask, "latex_problems": LatexProblemsTask}

__all__ = ["ArithmeticTask", "WordProblemsTask", "LatexProblemsTask", "make_arithmetic_dataset", "TASKS",
           "CorruptedArithmeticSFT"]
