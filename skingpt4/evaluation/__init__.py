"""Evaluation (docs/evaluation.md): the paper's clinical protocol (four prompts per case, dermatologists'
questionnaire, consistency, response time) and automatic diagnosis metrics, run by `evaluate.py`.

extract        free-text answer -> class (15 + Others, or "unknown") / SKINCON concepts; data in the class table (skingpt4/common/classes.json)
cases          which images to evaluate and their labels, skin types, concepts
sessions       the prompts over many cases with ChatEngine.ask_batch; bad cases reported, run goes on
records        SHA-256 fingerprints and the per-case JSON record
report         the HTML page for the reviewing dermatologists
questionnaire  blank / filled questionnaire CSVs, the Fig. 4a table and chart
consistency    consistency ratio over repeated runs (Fig. 4c)
metrics        accuracy, per-class P/R/F1, confusion matrix, by skin type; concept recall
latency        response-time statistics (Fig. 4b)
config         the `evaluation:` config section
tasks          the tasks of `evaluate.py --task`
"""
