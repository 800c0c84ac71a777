"""What a fitted adapter does with queries: ``transform`` (the fast blocked pass of a plain
linear map, or the map as defined: hybrid blocks, the MLP branch, which also serves the
rows the fast pass left out) and ``score``. Reads the fitted state; assigns none."""

from dataclasses import dataclass

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.utils import assert_all_finite
from sklearn.utils.validation import check_is_fitted, validate_data

from .._transform.linear import map_rows
from .._transform.mlp import numpy_residual
from .._utils.validation import FLOAT_DTYPES, as_target_matrix, l2_normalize, warn_zero_rows
from ..metrics import retrieval_score
from .rows import normalize_blocks


class MappingMixin(TransformerMixin):
    """``transform`` and ``score`` of a fitted adapter (``coef_``, ``intercept_``,
    ``module_params_`` and the row settings). A TransformerMixin itself, so that
    ``set_output`` wraps this ``transform``."""

    @property
    def _n_features_out(self):
        """Output width, for ``get_feature_names_out``."""
        return self.coef_.shape[1]

    def transform(self, X):
        """Map query-encoder embeddings into the document space.

        An all-zero query row maps to a zero row, with a warning (in hybrid
        input, the other block still carries the query).

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features_in_)

        Returns
        -------
        X_doc : ndarray of shape (n_queries, n_doc_features)
            Same float dtype as ``X`` (float32 stays float32); rows are unit
            length when ``normalize_output=True``.
        """
        check_is_fitted(self, "coef_")
        fitted = FittedMap(self.coef_, self.intercept_, self.module_params_, self.hybrid,
                           self.normalize_input, self.normalize_output)
        # The fast pass finds NaN/inf itself, which saves validate_data's pass over X.
        X = validate_data(self, X, reset=False, dtype=FLOAT_DTYPES,
                          ensure_all_finite=fitted.exact_only)
        return fitted.apply(X, type(self).__name__)

    def score(self, X, y, sample_weight=None):
        """Mean nDCG@10 of each query's relevant documents among the targets.

        Rows with identical ``X`` form one query whose relevant documents are
        their ``Y`` rows; every query ranks the distinct rows of ``Y`` by
        cosine similarity to its mapped embedding. Higher is better, so
        ``GridSearchCV`` and ``cross_val_score`` need no custom scorer. For a
        real document collection use
        :func:`era_sklearn.metrics.make_retrieval_scorer`.

        Parameters
        ----------
        X : array-like of shape (n_pairs, n_features_in_)
        y : array-like of shape (n_pairs, n_doc_features)
        sample_weight : ignored
            Accepted for API compatibility.

        Returns
        -------
        score : float
        """
        Q = self.transform(X)
        Y = as_target_matrix(y, Q.shape[0], dtype=FLOAT_DTYPES)
        if Y.shape[1] != Q.shape[1]:
            raise ValueError(
                f"Y has {Y.shape[1]} features, but this ERAAdapter maps into {Q.shape[1]}."
            )
        return retrieval_score(Q, Y, k=10, metric="ndcg")


@dataclass(frozen=True)
class FittedMap:
    """What ``transform`` applies: the fitted arrays and the row settings."""

    coef: np.ndarray
    intercept: np.ndarray
    module_params: dict | None
    hybrid: bool
    normalize_input: bool
    normalize_output: bool

    @property
    def exact_only(self):
        """Blocks normalised on their own, or a non-linear branch: no scale commutes with
        the product, so the fast pass does not apply."""
        return self.hybrid or self.module_params is not None

    def apply(self, X, estimator_name):
        """The mapped rows of validated X (finite unless ``exact_only`` is False)."""
        if self.exact_only:
            return self.exactly(X, zero_rows="warn")
        # NaN and inf in X propagate through the product: the pass finds them in the output
        # rows it returns as suspect, which saves validate_data's pass over X.
        intercept = self.intercept.astype(X.dtype, copy=False) if np.any(self.intercept) \
            else None
        out, suspect = map_rows(
            X, self.coef.astype(X.dtype, copy=False), intercept,
            normalize_input=self.normalize_input, normalize_output=self.normalize_output,
        )
        if suspect.size:
            out[suspect] = self._suspect_rows(X, suspect, estimator_name)
        return out

    def _suspect_rows(self, X, rows, estimator_name):
        """The rows ``map_rows`` left out, by the definition, with the errors and warnings
        that the whole of X gets: validate_data's for NaN/inf, and the all-zero-row warning
        with the rows' indices in X."""
        A = X[rows]
        if not np.isfinite(A).all():
            # validate_data's own check, on the whole of X: the same message, which names
            # NaN or infinity as scikit-learn does for the first non-finite value.
            assert_all_finite(X, input_name="X", estimator_name=estimator_name)
        if self.normalize_input:
            zero = rows[~A.any(axis=1)]
            if zero.size:
                warn_zero_rows("X", zero, stacklevel=4)
        return self.exactly(A, zero_rows="ignore")

    def exactly(self, X, zero_rows):
        """The map as defined, on finite X: normalise the input rows (each block on its own
        when hybrid), multiply, add the MLP branch and the intercept, normalise the output."""
        coef = self.coef.astype(X.dtype, copy=False)
        X = normalize_blocks(X, coef.shape[1], normalize=self.normalize_input,
                             hybrid=self.hybrid, zero_rows=zero_rows)
        out = X @ coef
        if self.module_params is not None:
            out += numpy_residual(self.module_params, X)
        if np.any(self.intercept):
            out += self.intercept.astype(X.dtype, copy=False)
        if not np.isfinite(out).all():
            raise ValueError(
                "The mapped queries overflow (X is too large for normalize_input=False); "
                "scale X down or set normalize_input=True."
            )
        if self.normalize_output:
            # out is ours: divide in place. Zero rows (zero queries) stay zero.
            out = l2_normalize(out, name="The mapped queries", zero_rows="ignore", copy=False)
        return out
