import pytest

from rftkit.graders.templates import SampleError, TemplateError, compile_template

from .conftest import ex


def test_item_and_sample_variables_render():
    t = compile_template("Q: {{ item.prompt }} ref={{item.answer}} got={{sample.output_text}}")
    assert t.render(ex(answer=42), "41") == "Q: question? ref=42 got=41"


def test_nested_json_and_list_index():
    t = compile_template("{{sample.output_json.person.name}}/{{item.tags.1}}")
    assert t.render(ex(tags=["a", "b"]), '{"person": {"name": "Zoë"}}') == "Zoë/b"


def test_single_variable_keeps_the_raw_value():
    assert compile_template("{{item.answers}}").value(ex(answers=["x", "y"]), "") == ["x", "y"]
    assert compile_template("{{item.obj}}").render(ex(obj={"k": 1}), "") == '{"k": 1}'


def test_output_json_on_non_json_is_a_sample_error():
    t = compile_template("{{sample.output_json.a}}")
    for bad in ["not json", "", '{"a": NaN}', '{"b": 1}']:
        with pytest.raises(SampleError):
            t.render(ex(), bad)


def test_missing_item_field_is_a_template_error():
    with pytest.raises(TemplateError, match="no field 'answer'"):
        compile_template("{{item.answer}}").render(ex(), "x")


@pytest.mark.parametrize("source, message", [
    ("{{foo.bar}}", "namespace"), ("{{sample.output_tokens}}", "sample has only"), ("{{item}}", "names no field"),
    ("{{item.a b}}", "not of the form"), ("{{item.a}", "unbalanced"), ("{{sample.output_text.x}}", "no keys")])
def test_malformed_templates_fail_at_compile_time(source, message):
    with pytest.raises(ValueError, match=message):
        compile_template(source)


def test_literal_text_without_variables():
    assert compile_template("plain").render(ex(), "whatever") == "plain"


def test_latex_braces_around_a_variable():
    t = compile_template(r"\frac{{{item.a}}}{2}")
    assert t.render(ex(a=3), "") == r"\frac{3}{2}"
