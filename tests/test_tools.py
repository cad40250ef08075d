"""The book's build helpers: table of contents and the student edition."""

from tools.book import chapters, toc_files
from tools.student import strip_solutions

SAMPLE = """intro
```{exercise} Q1
:label: c-ex1

question one
```

```{solution} c-ex1
:class: dropdown

answer one
```

````{solution-start} c-ex1
:class: dropdown
````

answer with code

```{code-cell} ipython3
print("secret")
```

````{solution-end}
````

after
"""


def test_strip_solutions_keeps_exercises_and_removes_answers():
    out = strip_solutions(SAMPLE)
    assert "question one" in out and "intro" in out and "after" in out
    assert "answer" not in out and "secret" not in out and "solution" not in out


def test_toc_lists_existing_pages_and_chapters_are_notebooks():
    pages = toc_files()
    assert pages[0].name == "intro.md"
    assert all(p.exists() for p in pages)
    assert any(p.name == "01_exact.md" for p in chapters())
