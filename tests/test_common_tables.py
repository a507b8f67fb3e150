"""The class and concept tables are package data read by one reader: the shipped ones load, and a table that cannot
be used is refused with a message that names the file and the problem."""
import json

import pytest

from skingpt4.common.class_table import ClassTableError, read_class_table
from skingpt4.common.concept_table import CONCEPTS, ConceptTableError, read_concept_table


def test_the_shipped_tables_load():
    assert len(read_class_table()["classes"]) == 16
    assert len(read_concept_table(need_wording=True)["concepts"]) == len(CONCEPTS) == 48


@pytest.mark.parametrize("reader,error,content,message", [
    (read_class_table, ClassTableError, "{not json", "cannot read the class table"),
    (read_class_table, ClassTableError, {"classes": []}, "expected a non-empty 'classes' list"),
    (read_class_table, ClassTableError, {"classes": [{"name": "acne"}]}, "class 'acne' lacks ['phrase', 'synonyms']"),
    (read_concept_table, ConceptTableError, [1, 2], "expected a non-empty 'concepts' list"),
    (read_concept_table, ConceptTableError,
     {"concepts": [{"name": "Papule", "synonyms": []}, {"name": "Papule", "synonyms": []}]}, "names must be unique"),
])
def test_a_bad_table_names_the_file_and_the_problem(tmp_path, reader, error, content, message):
    path = tmp_path / "table.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(error) as caught:
        reader(path)
    assert str(path) in str(caught.value) and message in str(caught.value) and "\n" not in str(caught.value)
