"""The questions the project asks of a skin photo (docs/prompts.md): the paper's four clinical prompts, asked in
this order in one conversation, and the step-1 concept question."""

CLINICAL_PROMPTS = (
    "Could you describe the skin disease in this image for me?",
    "Please provide a paragraph listing additional features you observed in the image.",
    "Based on the previous information, please provide a detailed explanation of the cause of this skin disease.",
    "What treatment and medication should be recommended for this case?",
)
# Short names of the four prompts, for buttons, plots and tables.
CLINICAL_LABELS = ("Describe the skin disease", "Additional features", "Cause", "Treatment and medication")
# The step-1 (SKINCON) training prompt, used to ask for the concepts an image shows.
CONCEPT_PROMPT = "Could you describe the medical concepts of skin disease in this image for me?"


def prompt_name(prompt: str, index: int) -> str:
    """The short name of a clinical prompt; another prompt is named by its number and first words."""
    if prompt in CLINICAL_PROMPTS:
        return CLINICAL_LABELS[CLINICAL_PROMPTS.index(prompt)]
    words = prompt.split()
    short = " ".join(words[:5]) + ("…" if len(words) > 5 else "")
    return f"Q{index + 1}: {short}"
