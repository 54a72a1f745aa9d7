"""The template engine (a strict subset of Thymeleaf 3): rendering, errors, static checks."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from switchboard.server.templates.engine import (
    CompiledTemplate,
    MissingArgument,
    Reference,
    RenderError,
    TemplateError,
    TemplateSyntaxError,
    check_arguments,
    compile_template,
    missing_arguments,
    resolve_argument,
    to_text,
    truthy,
)

pytestmark = pytest.mark.unit

# From seeds/001: the sample SMS template's data.content and its arguments.
SEED_CONTENT = "SGkgWygke25hbWV9KV0sIGVudGVyIFsoJHtyZXNldExpbmt9KV0gdG8gcmVzZXQgcGFzc3dvcmQ="
SEED_ARGUMENTS: dict[str, Any] = {
    "name": "Juan",
    "subscriptions": ["ftth", "mobile", "health"],
    "resetLink": "https://password.com/reset/123456",
    "birthDate": "2022-04-25 12:00:00",
    "vipClient": False,
    "balance": 45.7,
    "birthCountry": "US",
    "attached.txt": "SG9sYSBQYWJsbyA6KQo=",
    "embedded_image_png": "iVBORw0KGgo=",
    "qrArgument": "Text to convert into QR Code",
}


def text(source: str, **arguments: Any) -> str:
    return compile_template(source, "text").render(arguments)


def html(source: str, **arguments: Any) -> str:
    return compile_template(source, "html").render(arguments)


def syntax_error(source: str, mode: str = "text") -> TemplateSyntaxError:
    with pytest.raises(TemplateSyntaxError) as caught:
        compile_template(source, mode)  # type: ignore[arg-type]
    return caught.value


def render_error(template: CompiledTemplate, **arguments: Any) -> RenderError:
    with pytest.raises(RenderError) as caught:
        template.render(arguments)
    return caught.value


# -- the seed ----------------------------------------------------------------------------------


def test_seed_sms_template_renders_exactly() -> None:
    source = base64.b64decode(SEED_CONTENT).decode()
    assert source == "Hi [(${name})], enter [(${resetLink})] to reset password"
    template = compile_template(source, "text")
    assert template.render(SEED_ARGUMENTS) == (
        "Hi Juan, enter https://password.com/reset/123456 to reset password"
    )
    assert template.references == (
        Reference(("name",), "text", 1, 6),
        Reference(("resetLink",), "text", 1, 25),
    )
    assert (
        check_arguments(
            template, {"name": "String", "resetLink": "Link", "subscriptions": "StringList"}
        )
        == []
    )


def test_literal_text_passes_through_unchanged() -> None:
    source = "Tu código: 1234 <b>&amp; ${name} {x} [x] [ (y) ] ]] )] \n\t fin"
    assert text(source) == source


# -- escaping ----------------------------------------------------------------------------------


def test_text_mode_does_not_escape_either_form() -> None:
    assert text("[[${v}]]|[(${v})]", v="<a & 'b'>") == "<a & 'b'>|<a & 'b'>"


def test_html_mode_escapes_double_brackets_only() -> None:
    assert html("<p>[[${v}]]|[(${v})]</p>", v="<a & \"b\" 'c'>") == (
        "<p>&lt;a &amp; &quot;b&quot; &#x27;c&#x27;&gt;|<a & \"b\" 'c'></p>"
    )


def test_whitespace_inside_inline_expressions() -> None:
    assert text("[( ${ name } )] [[ ${name}]]", name="Ana") == "Ana Ana"


# -- paths -------------------------------------------------------------------------------------


def test_nested_paths_and_indexes() -> None:
    arguments = {
        "order": {"items": [{"sku": "A1", "tags": ["x", "y"]}], "ship-to": {"city": "Lugo"}},
        "list": ["a", "b", "c"],
    }
    source = (
        "[(${order.items[0].sku})] [(${order.items[0]['tags'][1]})] "
        '[(${order["ship-to"].city})] [(${list[2]})] [(${order.items[ 0 ].sku})]'
    )
    assert compile_template(source, "text").render(arguments) == "A1 y Lugo c A1"


def test_dotted_argument_names_resolve_longest_first() -> None:
    template = compile_template("[(${attached.txt})]", "text")
    assert template.render({"attached.txt": "literal"}) == "literal"
    assert template.render({"attached": {"txt": "member"}}) == "member"
    both = {"attached.txt": "literal", "attached": {"txt": "member"}}
    assert template.render(both) == "literal"
    deeper = compile_template("[(${a.b.c})]", "text")
    assert deeper.render({"a.b": {"c": 2}}) == "2"
    assert deeper.render({"a": {"b": {"c": 3}}}) == "3"
    assert template.references == (Reference(("attached", "txt"), "text", 1, 3),)
    assert resolve_argument(("attached", "txt"), {"attached.txt"}) == ("attached.txt", ())
    assert resolve_argument(("attached", "txt"), {"attached"}) == ("attached", ("txt",))
    assert resolve_argument(("a", "b", 0, "c"), {"a.b"}) == ("a.b", (0, "c"))
    assert resolve_argument(("x",), {"y"}) is None


def test_argument_names_with_hyphens_and_underscores() -> None:
    assert (
        text(
            "[(${embedded_image_png})]/[(${first-name})]",
            **{"embedded_image_png": "i", "first-name": "F"},
        )
        == "i/F"
    )


def test_missing_argument_is_a_render_error_naming_it() -> None:
    template = compile_template("Hi\n  [(${name})]", "text")
    error = render_error(template)
    assert isinstance(error, MissingArgument)
    assert (error.name, error.line, error.column, error.construct) == ("name", 2, 5, "${name}")
    assert str(error) == "line 2, column 5: missing argument 'name' in ${name}"
    dotted = render_error(compile_template("[(${attached.txt})]", "text"))
    assert isinstance(dotted, MissingArgument)
    assert "'attached.txt', 'attached'" in dotted.message


@pytest.mark.parametrize(
    ("source", "arguments", "message"),
    [
        ("[(${m.nope})]", {"m": {"a": 1}}, "${m.nope}: no key 'nope'"),
        ("[(${l[3]})]", {"l": ["a"]}, "${l[3]}: index 3 is out of range (size 1)"),
        ("[(${s.length})]", {"s": "abc"}, "${s.length}: cannot read 'length' of a String"),
        ("[(${s[0]})]", {"s": "abc"}, "${s[0]}: cannot read [0] of a String"),
        ("[(${n.x})]", {"n": None}, "${n.x}: cannot read 'x' of a null"),
        ("[(${m[0]})]", {"m": {"0": 1}}, "${m[0]}: cannot read [0] of a map"),
    ],
)
def test_bad_member_or_index_is_a_render_error(
    source: str, arguments: dict[str, Any], message: str
) -> None:
    error = render_error(compile_template(source, "text"), **arguments)
    assert (error.line, error.column, error.message) == (1, 3, message)


# -- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("text", "text"),
        ("", ""),
        (None, ""),
        (True, "true"),
        (False, "false"),
        (7, "7"),
        (-12, "-12"),
        (3.0, "3"),
        (45.7, "45.7"),
        (-0.5, "-0.5"),
        (0.001, "0.001"),
        (0.0005, "5.0E-4"),
        (12345678.9, "1.23456789E7"),
        (1e20, "1.0E20"),
        (1e-10, "1.0E-10"),
        (float("inf"), "Infinity"),
        (["ftth", "mobile", "health"], "[ftth, mobile, health]"),
        ([1, None, True, 2.5, ["x"]], "[1, null, true, 2.5, [x]]"),
        ([], "[]"),
        ({"k": "v", "k2": 2}, "{k=v, k2=2}"),
        ({"a": None, "b": {"c": [1]}}, "{a=null, b={c=[1]}}"),
    ],
)
def test_values_are_shown_as_java_would(value: Any, shown: str) -> None:
    assert to_text(value) == shown
    assert text("[(${v})]", v=value) == shown


def test_seed_arguments_render_as_thymeleaf_would() -> None:
    source = "[(${subscriptions})] [(${vipClient})] [(${balance})] [(${birthDate})]"
    assert compile_template(source, "text").render(SEED_ARGUMENTS) == (
        "[ftth, mobile, health] false 45.7 2022-04-25 12:00:00"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        (True, True),
        (0, False),
        (0.0, False),
        (2, True),
        ("false", False),
        (" OFF ", False),
        ("No", False),
        ("0", True),
        ("", True),
        ("yes", True),
        ([], True),
        ({}, True),
    ],
)
def test_truthiness_is_thymeleafs(value: Any, expected: bool) -> None:
    assert truthy(value) is expected
    assert html('<p th:if="${v}">y</p>', v=value) == ("<p>y</p>" if expected else "")


# -- html attributes ---------------------------------------------------------------------------


def test_th_text_and_utext_replace_the_content() -> None:
    source = '<p class="a" th:text="${v}">placeholder <b>x</b></p><div th:utext="${v}"></div>'
    assert html(source, v="<i>hi</i>") == (
        '<p class="a">&lt;i&gt;hi&lt;/i&gt;</p><div><i>hi</i></div>'
    )


def test_th_if_and_th_unless() -> None:
    source = '<p th:if="${vip}">VIP</p><p th:unless="${vip}">regular</p>'
    assert html(source, vip=True) == "<p>VIP</p>"
    assert html(source, vip=False) == "<p>regular</p>"
    both = '<p th:if="${a}" th:unless="${b}">x</p>'
    assert [html(both, a=a, b=b) for a, b in [(1, 0), (1, 1), (0, 0)]] == ["<p>x</p>", "", ""]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("${country} == 'US'", True),
        ("${country} != 'US'", False),
        ("${country} eq 'ES'", False),
        ("${balance} > 45", True),
        ("${balance} >= 45.7", True),
        ("${balance} lt 10", False),
        ("${balance} == 45.7", True),
        ("${code} == 7", True),
        ("${code} == '7.0'", True),
        ("${vip} == false", True),
        ("${vip} == 'false'", False),
        ("${missing} == null", True),
        ("!${vip}", True),
        ("not ${vip}", True),
        ("!!${vip}", False),
        ("!(${country} == 'US')", False),
        ("${vip} or ${country} == 'US'", True),
        ("${vip} and ${country} == 'US'", False),
        ("(${vip} or ${balance} > 100) or not ${vip}", True),
    ],
)
def test_conditions(condition: str, expected: bool) -> None:
    arguments = {"country": "US", "balance": 45.7, "code": "007", "vip": False, "missing": None}
    source = f'<b th:if="{condition}">y</b>'
    assert compile_template(source, "html").render(arguments) == ("<b>y</b>" if expected else "")


def test_entities_in_attribute_values_are_read_unescaped() -> None:
    source = '<b th:if="${n} &gt; 3 and ${s} == &quot;a&quot;">y</b>'
    assert html(source, n=4, s="a") == "<b>y</b>"


def test_th_each_with_status() -> None:
    source = (
        '<ul><li th:each="s, st : ${subs}" class="item">'
        "[[${st.index}]] [[${st.count}]]/[[${st.size}]] [[${s}]] "
        "[[${st.first}]] [[${st.last}]] [[${st.even}]] [[${st.odd}]] [[${st.current}]]"
        "</li></ul>"
    )
    assert html(source, subs=["a", "b"]) == (
        '<ul><li class="item">0 1/2 a true false false true a</li>'
        '<li class="item">1 2/2 b false true true false b</li></ul>'
    )
    implicit = '<i th:each="s : ${subs}">[[${sStat.count}]]</i>'
    assert html(implicit, subs=["a", "b", "c"]) == "<i>1</i><i>2</i><i>3</i>"
    assert html(implicit, subs=[]) == ""
    assert html(implicit, subs=None) == ""


def test_th_each_shadows_arguments_and_nests() -> None:
    source = (
        '<p th:each="name : ${names}">[[${name}]]'
        '<i th:each="n : ${nums}" th:if="${n} > 1" th:text="${name}">x</i></p>[[${name}]]'
    )
    assert html(source, name="arg", names=["a", "b"], nums=[1, 2]) == (
        "<p>a<i>a</i></p><p>b<i>b</i></p>arg"
    )


def test_th_each_over_a_map_gives_entries() -> None:
    source = '<th:block th:each="e : ${m}">[(${e.key})]=[(${e.value})];[(${e})] </th:block>'
    assert html(source, m={"a": "1", "b": "2"}) == "a=1;a=1 b=2;b=2 "


def test_th_each_over_a_non_list_is_a_render_error() -> None:
    template = compile_template('<p>\n<i th:each="s : ${name}">x</i></p>', "html")
    error = render_error(template, name="Juan")
    assert (error.line, error.column) == (2, 17)
    assert error.message == "${name}: cannot iterate over a String"


def test_th_block_renders_only_its_content() -> None:
    source = '<th:block th:if="${show}"><b>[[${v}]]</b></th:block><th:block>plain</th:block>'
    assert html(source, show=True, v=1) == "<b>1</b>plain"
    assert html(source, show=False, v=1) == "plain"


def test_data_th_attributes_and_xmlns_th() -> None:
    source = '<html xmlns:th="http://www.thymeleaf.org"><p data-th-text="${v}">x</p></html>'
    assert html(source, v="y") == "<html><p>y</p></html>"


def test_inline_expressions_in_attribute_values() -> None:
    source = (
        '<a href="[[${link}]]&amp;utm=sms" title=\'[(${name})]\' class="c">go</a>'
        '<img alt="[[${name}]]" src="x.png"/>'
    )
    assert html(source, link='https://x.test/?a=1&b="2"', name="A & B") == (
        "<a href=\"https://x.test/?a=1&amp;b=&quot;2&quot;&amp;utm=sms\" title='A & B' "
        'class="c">go</a><img alt="A &amp; B" src="x.png"/>'
    )


def test_untouched_markup_round_trips() -> None:
    source = (
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN">\n'
        "<HTML><head><meta charset=utf-8><style>a[href] > b { x: 1 }</style></head>\n"
        "<!--[if mso]><table><tr><td><![endif]-->\n"
        "<body BGCOLOR=#fff data-x = 'a\"b' checked>\n"
        "  <p>caf&eacute; &copy 2024 &#169; &#x27; &nbsp;& a < b</p><br><br/><hr />\n"
        "  <p>unclosed <li>items</p></td></div>\n"
        "  <?php echo 1 ?><![CDATA[ raw ]]>\n"
        "  <script>if (a < b && c > d) { document.write('<b>') }</script>\n"
        "</body></HTML>"
    )
    assert html(source) == source


def test_inline_expressions_in_comments_and_whitespace_kept_around_elements() -> None:
    source = '<!-- [[${v}]] -->\n  <p th:if="${no}">x</p>\n  <p>[[${v}]]</p>'
    assert html(source, v="<v>", no=False) == "<!-- &lt;v&gt; -->\n  \n  <p>&lt;v&gt;</p>"


# -- syntax errors -----------------------------------------------------------------------------


def test_unclosed_inline_expression() -> None:
    error = syntax_error("Hi [(${name}, bye")
    assert (error.line, error.column, error.construct) == (1, 4, "[(${name}, bye")
    assert str(error) == "line 1, column 4: unclosed inline expression [("
    assert isinstance(error, TemplateError)


def test_empty_expression() -> None:
    error = syntax_error("ok\nthen [[${}]]")
    assert (error.line, error.column, error.construct) == (2, 8, "${}")
    assert error.message == "empty expression ${}"
    empty = syntax_error("x [[ ]]")
    assert (empty.column, empty.message) == (3, "empty inline expression")


def test_unsupported_attribute() -> None:
    error = syntax_error('<html>\n  <a class="x" th:href="@{/reset}">go</a>\n</html>', "html")
    assert (error.line, error.column, error.construct) == (2, 16, "th:href")
    assert error.message.startswith("th:href is not supported")
    assert 'write href="[[${…}]]" instead' in error.message


def test_message_expressions() -> None:
    error = syntax_error("Hola\n [[#{msg}]]")
    assert (error.line, error.column, error.construct) == (2, 4, "#{msg}")
    assert error.message == "message expressions #{…} are not supported: #{msg}"
    in_attribute = syntax_error('<p th:text="#{msg}">x</p>', "html")
    assert (in_attribute.column, in_attribute.construct) == (13, "#{msg}")


def test_method_calls() -> None:
    error = syntax_error("x [(${a.b()})]")
    assert (error.line, error.column, error.construct) == (1, 9, "b()")
    assert error.message == "method calls are not supported: b()"


@pytest.mark.parametrize(
    ("source", "column", "construct", "message"),
    [
        ("[[${a}", 1, "[[${a}", "unclosed inline expression [["),
        ("[[${a]]", 3, "${a]", "unclosed ${: expected }"),
        ("[[*{a}]]", 3, "*{a}", "selection expressions *{…} are not supported: *{a}"),
        ("[[@{/a}]]", 3, "@{/a}", "link expressions @{…} are not supported: @{/a}"),
        ("[[~{f}]]", 3, "~{f}", "fragment expressions ~{…} are not supported: ~{f}"),
        ("[[${#strings.x(a)}]]", 5, "#strings", "utility objects and expression variables"),
        ("[[${a + 1}]]", 7, "+", "operators inside ${…} are not supported"),
        ("[[${a} + ${b}]]", 8, "+", "operators are not supported in [[…]]"),
        ("[[${a?.b}]]", 6, "?.", "safe navigation ?. is not supported"),
        ("[['x']]", 3, "'x'", "text literals are not supported here"),
        ("[[${a[x]}]]", 6, "[x]", "an index must be"),
        ("[[${1}]]", 5, "${1}", "expected an argument name"),
        ('a [# th:each="x : ${l}"]', 3, '[# th:each="x : ${l}"]', "text-mode element"),
        ("a [/] b", 3, "[/]", "text-mode element blocks"),
    ],
)
def test_text_mode_syntax_errors(source: str, column: int, construct: str, message: str) -> None:
    error = syntax_error(source)
    assert (error.line, error.column, error.construct) == (1, column, construct)
    assert error.message.startswith(message)


@pytest.mark.parametrize(
    ("source", "line", "column", "construct", "message"),
    [
        ('<p th:with="x=1">', 1, 4, "th:with", "th:with is not supported"),
        ('<p\n  TH:ATTR="x=1">a</p>', 2, 3, "TH:ATTR", "TH:ATTR is not supported"),
        ('<p data-th-href="x">a</p>', 1, 4, "data-th-href", "data-th-href is not supported"),
        ("<th:each>x</th:each>", 1, 1, "<th:each", "the element <th:each> is not supported"),
        ("</th:block>", 1, 1, "</th:block>", "</th:block> closes nothing"),
        ('<th:block class="a">x</th:block>', 1, 11, "class", "<th:block> takes only th:*"),
        ('<p th:text="${a}" th:utext="${b}">', 1, 19, "th:utext", "th:text and th:utext"),
        ('<p th:if="${a}" th:if="${b}">', 1, 17, "th:if", "th:if is given twice"),
        ("<p th:if>x</p>", 1, 4, "th:if", "th:if needs a value"),
        ('<br th:text="${a}">', 1, 5, "th:text", "th:text on <br>, which has no content"),
        ('<ul><li th:each="x : ${l}">[[${x}]]</ul>', 1, 5, "<li", "<li> carries th:*"),
        ('<p th:if="${a}">never closed', 1, 1, "<p", "<p> carries th:* attributes"),
        ('<p th:each="${l}">x</p>', 1, 13, "${l}", "th:each must be"),
        ('<p th:each="x : ${l} y">x</p>', 1, 22, "y", "th:each iterates a single"),
        ('<p th:text="${a} ${b}">x</p>', 1, 18, "${b}", "th:text takes a single"),
        ('<p th:if="${a} == ${b}">x</p>', 1, 19, "${b}", "the right side of a comparison"),
        ("<p th:if=\"'x' == ${b}\">x</p>", 1, 11, "'x'", "the left side of a comparison"),
        ('<p th:if="!${a} == 1">x</p>', 1, 12, "${a}", "negating a comparison is ambiguous"),
        ("<p th:if=\"${a} > 'x'\">x</p>", 1, 16, ">", "> compares numbers"),
        ('<p th:if="${a} && ${b}">x</p>', 1, 16, "&&", "'&&' is not an operator"),
        ('<p th:if="${a} ? 1">x</p>', 1, 16, "?", "conditional and Elvis"),
        ('<p th:if="${a} - 1">x</p>', 1, 16, "-", "arithmetic operators"),
        ('<p th:if="">x</p>', 1, 11, "", "empty condition"),
        ('<p th:if="(${a}">x</p>', 1, 11, "(", "unclosed ("),
        (
            '<p th:each="s : ${l}">[[${sStat.name}]]</p>',
            1,
            25,
            "${sStat.name}",
            "${sStat.name}: an iter",
        ),
        ("<a href=[[${x}]]>a</a>", 1, 4, "href=[[${x}]]", "inline expressions need a quoted"),
        ("<!--/* hidden */-->", 1, 1, "<!--/*", "Thymeleaf parser-level comment"),
        ('<p>\n  &#x<b th:text="${a}">x</b>', 2, 6, '<b th:text="${a}">', "markup that cannot"),
        ("<p>\n <![[x", 2, 2, "<![[x", "markup that cannot be parsed"),
    ],
)
def test_html_syntax_errors(
    source: str, line: int, column: int, construct: str, message: str
) -> None:
    error = syntax_error(source, "html")
    assert (error.line, error.column, error.construct) == (line, column, construct)
    assert error.message.startswith(message)


def test_html_positions_count_lines_and_columns() -> None:
    source = '<html>\n<body>\n\t<p>ok</p>\n\t<p class="x">[[${a.b(1)}]]</p>\n</body>'
    error = syntax_error(source, "html")
    assert (error.line, error.column) == (4, 21)


# -- static checks -----------------------------------------------------------------------------

DECLARED = {
    "userName": "String",
    "bonusList": "StringList",
    "productNameAndInfo": "StringMap",
    "maxRetries": "Number",
    "resetLink": "Link",
    "birthCountry": "LocaleRegion",
    "vipClient": "Boolean",
    "attached.txt": "Attachment",
}


def test_check_arguments_accepts_fitting_uses() -> None:
    source = (
        '<p th:if="${vipClient} and ${maxRetries} > 2">[[${userName}]] [[${attached.txt}]]</p>'
        '<li th:each="b, st : ${bonusList}">[[${b}]] [[${st.count}]]</li>'
        '<li th:each="e : ${productNameAndInfo}">[[${e.key}]] [[${e.value}]]</li>'
        "[[${productNameAndInfo.price}]] [[${productNameAndInfo['name']}]] [[${bonusList[0]}]]"
        '[[${bonusList}]] <a href="[[${resetLink}]]">x</a>'
    )
    assert check_arguments(compile_template(source, "html"), DECLARED) == []


def test_check_arguments_reports_unknown_arguments() -> None:
    template = compile_template("Hi [(${name})]\n[(${attached.pdf})]", "text")
    assert check_arguments(template, DECLARED) == [
        "line 1, column 6: ${name}: unknown argument 'name': "
        "the communication type does not declare it",
        "line 2, column 3: ${attached.pdf}: unknown argument 'attached' (nor 'attached.pdf'): "
        "the communication type does not declare it",
    ]


def test_check_arguments_reports_incompatible_uses() -> None:
    source = (
        '<p th:each="c : ${userName}">x</p>\n'
        "[[${maxRetries[0]}]] [[${userName.first}]] [[${bonusList.first}]]\n"
        "[[${productNameAndInfo[0]}]]\n"
        '<p th:each="b : ${bonusList}">[[${b.name}]]</p>'
        '<p th:each="e : ${productNameAndInfo}">[[${e.name}]]</p>\n'
        "<p th:if=\"${vipClient} == 'yes'\">x</p><p th:if=\"${maxRetries} == 'many'\">x</p>"
        '<p th:if="${vipClient} > 1">x</p>'
    )
    problems = check_arguments(compile_template(source, "html"), DECLARED)
    assert problems == [
        "line 1, column 17: th:each over ${userName}, a String: only lists and maps",
        "line 2, column 3: ${maxRetries[0]}: [0] on a Number, which has no members or indexes",
        "line 2, column 24: ${userName.first}: .first on a String, which has no members or indexes",
        "line 2, column 46: ${bonusList.first}: a StringList is indexed by number, not .first",
        "line 3, column 3: ${productNameAndInfo[0]}: a StringMap is read by key (.key or "
        "['key']), not [0]",
        "line 4, column 33: ${b.name}: .name on a String, which has no members or indexes",
        "line 4, column 89: ${e.name}: a StringMap entry has only .key and .value, not .name",
        "line 5, column 11: ${vipClient} == 'yes': a Boolean only equals true or false",
        "line 5, column 49: ${maxRetries} == 'many': a Number never equals a non-numeric text",
        "line 5, column 89: ${vipClient} > 1: a Boolean is not a number",
    ]


def test_check_arguments_refuses_unknown_types() -> None:
    with pytest.raises(ValueError, match="unknown type 'Text'"):
        check_arguments(compile_template("x", "text"), {"a": "Text"})


def test_references_name_usages() -> None:
    source = (
        '<p th:if="${vip}">[[${user.name}]]</p><i th:each="b : ${bonus}" th:text="${b.code}">x</i>'
    )
    assert compile_template(source, "html").references == (
        Reference(("vip",), "condition", 1, 11),
        Reference(("user", "name"), "text", 1, 21),
        Reference(("bonus",), "iterable", 1, 55),
        Reference(("bonus",), "member", 1, 74),
    )


def test_missing_arguments_from_values() -> None:
    template = compile_template("[(${a})] [(${b.c})] [(${x.y})]", "text")
    assert missing_arguments(template, {"a": 1, "b": {}, "x.y": 2}) == []
    assert missing_arguments(template, {"b": {}}) == [
        "line 1, column 3: missing argument 'a' in ${a}",
        "line 1, column 23: missing argument 'x' in ${x.y} (tried 'x.y', 'x')",
    ]


# -- compilation -------------------------------------------------------------------------------


def test_compiled_templates_are_cached() -> None:
    source = "cached [(${x})] " + "y" * 10
    first = compile_template(source, "text")
    assert compile_template(source, "text") is first
    assert compile_template(source, "html") is not first
    assert first.mode == "text"
    assert compile_template(source, "html").mode == "html"


def test_one_template_renders_many_argument_sets() -> None:
    template = compile_template('<li th:each="x : ${l}">[[${x}]]</li>', "html")
    assert template.render({"l": [1]}) == "<li>1</li>"
    assert template.render({"l": ["a", "b"]}) == "<li>a</li><li>b</li>"


def test_th_elements_nest_to_a_limit() -> None:
    nested = '<div th:if="${a}">' * 64 + "x" + "</div>" * 64
    assert html(nested, a=True) == "<div>" * 64 + "x" + "</div>" * 64
    error = syntax_error('<div th:if="${a}">' * 65, "html")
    assert (error.line, error.column) == (1, 64 * 18 + 1)
    assert "nest more than 64 deep" in error.message


def test_bad_mode_and_oversized_source() -> None:
    with pytest.raises(ValueError, match="mode"):
        compile_template("x", "xml")  # type: ignore[arg-type]
    error = syntax_error("x" * (1024 * 1024 + 1))
    assert "at most" in error.message
