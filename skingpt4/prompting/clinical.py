"""The questions the project asks of a skin photo (docs/prompts.md), read from the prompt files shipped with the
package: the paper's four clinical prompts (prompts/clinical.txt), asked in this order in one conversation, and
the step-1 concept question (the line of prompts/step1.txt, without its image tag)."""
from skingpt4.prompting.prompt_files import packaged_lines, question_of

CLINICAL_PROMPTS = tuple(packaged_lines("clinical.txt"))
# Short names of the four prompts, for buttons, plots and tables.
CLINICAL_LABELS = ("Describe the skin disease", "Additional features", "Cause", "Treatment and medication")
# The step-1 (SKINCON) training prompt, used to ask for the concepts an image shows.
CONCEPT_PROMPT = question_of(packaged_lines("step1.txt")[0])
assert len(CLINICAL_PROMPTS) == len(CLINICAL_LABELS), "prompts/clinical.txt holds the paper's four prompts"


def prompt_name(prompt: str, index: int) -> str:
    """The short name of a clinical prompt; another prompt is named by its number and first words."""
    if prompt in CLINICAL_PROMPTS:
        return CLINICAL_LABELS[CLINICAL_PROMPTS.index(prompt)]
    words = prompt.split()
    short = " ".join(words[:5]) + ("…" if len(words) > 5 else "")
    return f"Q{index + 1}: {short}"
