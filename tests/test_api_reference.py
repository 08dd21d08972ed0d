"""The documentation an idea brings into the prompt: read from the installed library, the parameters
the idea names described, the rest listed; nothing for a name that is not an importable callable."""

from orchestrator.mutation.api_reference import reference, references


def test_the_parameters_an_idea_names_are_described_and_the_others_listed():
    text = references("Maximise with scipy.optimize.minimize and its SLSQP solver, as constraints and bounds.")
    assert text.startswith("`scipy.optimize.minimize(fun, x0, args=(), method=None")
    lines = {line.split(" :")[0]: line for line in text.splitlines() if line.startswith("- ")}
    # named by the idea: the dict form SLSQP takes, and which sign an inequality means
    assert "list of dictionaries" in lines["- constraints"] and "non-negative" in lines["- constraints"]
    assert "(min, max)" in lines["- bounds"]
    assert "Initial guess" in lines["- x0"]  # required, so described
    assert lines["- hess"].endswith("optional")  # neither: its name and type only
    assert ":ref:" not in text and "(see here)" not in text  # Sphinx markup is read as text
    assert len(text) <= 3200


def test_names_that_are_not_importable_callables_give_nothing():
    assert references("Rotate one ring by a small angle.") == ""
    assert reference("no_such_package_xyz.mod.func") == ""
    assert reference("scipy.optimize.no_such_function") == ""
    assert reference("os.path.sep") == ""  # a string, not a callable


def test_at_most_two_names_each_once():
    idea = "Try scipy.optimize.linprog, then scipy.optimize.linprog again, scipy.optimize.minimize or scipy.optimize.root."
    text = references(idea)
    assert text.count("`scipy.optimize.linprog(") == 1 and "`scipy.optimize.minimize(" in text
    assert "scipy.optimize.root(" not in text


def test_the_library_call_on_a_crash_line_is_resolved_through_the_programs_imports():
    from orchestrator.mutation.api_reference import call_references

    program = ("import numpy as np\nfrom scipy.optimize import linprog as lp\n\n\ndef radii(c):\n"
               "    res = lp(c=lambda r: -r.sum(),\n             b_ub=np.zeros(3))\n    return res.x\n")
    text = call_references(program, 7)  # the second line of the call's statement
    assert text.startswith("`scipy.optimize.linprog(c, A_ub=None")
    lines = {line.split(" :")[0]: line for line in text.splitlines() if line.startswith("- ")}
    assert "coefficients" in lines["- c"] and "upper bound" in lines["- b_ub"]  # keywords the call passes
    assert lines["- A_eq"].endswith("optional")
    assert call_references(program, 8) == ""  # `res.x` calls nothing
    assert call_references("def f(x):\n    return len(x)\n", 2) == ""  # a builtin is no library API
    assert call_references("def f(:\n", 1) == ""  # a program that does not parse


def google_style(input, target, reduction="mean", *, weight=None):
    """Compute a loss.

    Args:
        input (Tensor): Predicted values.
        target (Tensor): Ground truth
            values, on a second line.
        reduction (str, optional): Specifies the reduction to apply
            to the output. Default: 'mean'.

    Keyword args:
        weight (Tensor, optional): Weights for each sample.

    Returns:
        Tensor: the loss.

    Example::

        >>> google_style(a, b)
    """


def test_google_style_args_are_read_like_numpydoc_parameters():
    text = reference("tests.test_api_reference.google_style", frozenset({"reduction"}))
    lines = text.splitlines()
    assert lines[1] == "Compute a loss."
    entries = {line.split(" :")[0]: line for line in lines if line.startswith("- ")}
    assert entries["- input"] == "- input : Tensor: Predicted values."  # required: described
    assert entries["- target"] == "- target : Tensor: Ground truth values, on a second line."
    assert entries["- reduction"].endswith("to the output. Default: 'mean'.")  # named: described
    assert entries["- weight"] == "- weight : Tensor, optional"  # keyword args join the parameters, listed
    assert lines[lines.index("Returns:") + 1] == "- Tensor: the loss."
    assert ">>>" not in text and "Example" not in text  # the section after Returns is not read into it


def test_torch_docstrings_give_their_parameters():
    import torch  # noqa: F401 - imported here so the other tests do not pay for it

    text = reference("torch.nn.functional.mse_loss", frozenset({"reduction"}))
    entries = {line.split(" :")[0]: line for line in text.splitlines() if line.startswith("- ")}
    assert "Predicted values" in entries["- input"] and "'sum'" in entries["- reduction"]
    # a compiled function: the signature comes from the docstring's first line, so `input` is required
    clamp = reference("torch.clamp")
    assert clamp.startswith("`torch.clamp(input, min=None, max=None") and "- input : Tensor: the input tensor." in clamp


def test_a_docstring_signature_splits_at_top_level_commas_only():
    from orchestrator.mutation.api_reference import _signature_line

    sig, required = _signature_line("pad(input, pad=(a, b, c), mode='zeros, edge, wrap', value) -> Tensor\n\nPads.", "pad")
    assert sig == "(input, pad=(a, b, c), mode='zeros, edge, wrap', value) -> Tensor"
    assert required == {"input", "value"}  # not "b" from inside the tuple, nor "edge" from inside the string
    assert _signature_line("Pads a tensor.", "pad") == ("(...)", set())
