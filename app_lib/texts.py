"""Longer explanations shown on the pages (Markdown), kept here so that the pages stay short layouts."""

from app_lib.images import MAX_PIXELS
from app_lib.jobs import QUEUE_CAPACITY

HOME = """
#### What is a curvature certificate?
A classifier picks the class with the largest score (logit). An **adversarial attack** adds a small change to an
image so that another class wins. A **certificate** is a radius *r* with a proof that **no** change smaller than *r*
(in ℓ2 norm, pixels in [0, 1]) can flip the prediction.

For a network with a smooth activation (softplus, sigmoid, tanh), the *curvature* of the margin
f(x) = z_y(x) − z_t(x) — the eigenvalues of its Hessian — is bounded **everywhere** by numbers *m ≤ M* computed from
the weights alone. With those bounds, finding the closest point where the margin hits zero becomes a convex
problem; its dual gives a radius that is provably safe, and often equal to the exact distance to the decision
boundary (then the certificate is **exact**). Training with a curvature penalty γ·K (CRT) keeps the bounds small,
so the certificates get large.
"""

UPLOAD_CHECKPOINT = ("A `.pt` file saved by CRC Explorer (the Train page, `crc_core train`) loads at once. Other "
                     "PyTorch networks are imported: the paper's official checkpoints (such as "
                     "`mnist_2_softplus_L2_1.58_EIGEN_0.005`) and any fully connected net's `state_dict` (`fc1.…`, "
                     "an `nn.Sequential`'s `0.…`, a `module.` prefix). Files are only read as weights: code inside a "
                     "file is never run, and anything else is refused.")

IMPORT_FOUND = ("This is not a CRC Explorer checkpoint but a PyTorch file holding a fully connected network (only its "
                "weights were read; nothing in it was run). A state dict does not store the activation or the dataset: "
                "check them below, then **Import** saves the network in your models folder and picks it on every "
                "page.")

CERTIFY = """
* **Certified radius (all classes)**: the smallest, over every other class t, of the radius certified against t.
  Nothing closer than this can change the prediction. This is the certificate of the classifier.
* **Runner-up radius**: the paper certifies only against the class with the second-highest score. It is never
  smaller than the all-class radius, and it is not a guarantee for the classifier.
* **Exact**: the optimizer reached a point *on* the decision boundary at exactly the certified distance, so the
  radius is the true distance to the boundary (primal = dual, paper Theorem 1).
* **Interval**: the true distance to the boundary lies between the certified radius and the distance of the closest
  point found, over all classes, where another class wins: that point is the x_b shown below.
* **ρ**: an attack budget. *Certified at ρ* means radius ≥ ρ. Algorithm 2 (the curvature attack) looks for the
  worst image within distance ρ; *provably worst* means its dual certifies that nothing inside the ball does better.
"""

UPLOAD_IMAGE = (f"A picture of any size up to {MAX_PIXELS / 1e6:.0f} megapixels (PNG, JPEG, BMP, GIF, WebP, or a .npy "
                "array of grey values in [0, 1] or 0–255). The models take 28×28 grey images, so it is turned grey, "
                "padded to a square with its background colour (the shape is kept) and resized to 28×28. "
                "Fashion-MNIST objects are light on a dark background: 'auto' inverts a picture whose background is "
                "light, such as a dark drawing on white paper.")

HESSIAN = """
* The **margin** f(x) = z_y(x) − z_t(x) is the score of the predicted class y minus the score of a target class t.
  The prediction changes when f reaches 0.
* Its **Hessian** ∇²f (784 × 784 numbers, one per pair of pixels) says how f curves. Its **eigenvalues** are the
  curvatures along special directions (the **eigenvectors**, shown as images below: red = brighten, blue = darken).
* The certificate needs bounds that hold for *every* input: **m ≤ every eigenvalue ≤ M** (Theorem 3 for 2-layer
  networks) and **|every eigenvalue| ≤ K** (Theorem 4, any depth). If the bars sit far inside the bounds, the bounds are
  loose and certificates will be small; curvature-regularized training (γ, CRT) pulls them together.
* Lemma 1 writes the Hessian as one term per hidden layer; for deeper networks the per-layer terms are shown too.
  Theorem 4 bounds each term separately (whatever the input) and K is the sum of these per-layer bounds: the
  purple markers show ± each layer's bound next to the eigenvalue range its term actually has at this image.
"""

CURVATURE = """
* For a class y and a target t, the margin z_y − z_t bends (curves) as the image changes; the largest |eigenvalue|
  of its Hessian measures how much.
* **K_ub** (upper bound) is computed from the weights and holds *everywhere*: Theorem 3 (2-layer nets, separate
  m and M; K = max(|m|, M)), Theorem 4 (any depth), or the refined Theorem 4 (tighter, used for deep nets).
* **K_lb** (measured) is the largest |eigenvalue| found at test images predicted y whose runner-up is t (paper
  App. H.1). The true global curvature lies between K_lb and K_ub.
* **Ratio K_ub / K_lb**: 1 means the bound is tight. Standard training gives large ratios (loose bounds, small
  certificates); γ-regularized and CRT training bring it close to 1 — the paper's Figure 1.
* Averages use the pairs with enough test images (the paper keeps pairs with ≥ 1% of the test set).
"""

TRAIN = f"""
* **Standard** training minimises the cross-entropy only. Its curvature bound K usually grows large, so
  certificates are small.
* **γ-regularized** adds γ·K to the loss (paper eq. 7): K is the Theorem 4 curvature bound of the margin between the
  true class and the strongest other class, so the network learns to stay smooth.
* **CRT** (curvature-based robust training) also replaces each image by the curvature attack (Algorithm 2) within
  distance ε: it trains on the worst images it can find, and certifies best.
* **PGD** and **TRADES** (the paper's Table 14 baselines) train on points an ℓ2 PGD attack finds within ε (TRADES:
  cross-entropy plus β times the KL divergence between the predictions at the image and at that point). They reach
  high *empirical* robustness but have no curvature penalty, so their certificates can collapse on deeper nets.
* **ReLU** can be trained with standard, PGD or TRADES only: γ and CRT penalise the curvature bound, and ReLU has
  none (its Hessian is zero almost everywhere and undefined at its kinks). A 2-layer ReLU net is certified by the
  paper's App. G; deeper ReLU nets get no certified accuracy here.
* **Curves**: loss; the curvature bounds (the Theorem 4 bound K that the penalty uses, per step, and the bound the
  certificates use, per epoch: Theorem 3 for 2-layer nets, which is tighter, so it can sit below the first; both
  are upper bounds); test accuracy and the share of test images *certified* at distance ρ (radius ≥ ρ), against the
  runner-up class (the paper's metric) and against all classes (the guarantee); and the share that PGD at ρ
  does not fool (empirical: an upper bound on the true robust accuracy).
* **Time**, measured for the defaults (2×[256] softplus, CRT, 3 epochs on the 10,000 embedded Fashion-MNIST
  images, 100 test images certified per epoch): 22 s in one run on an idle machine, 177 s on a heavily loaded
  2-core machine using one thread. The page shows the elapsed time while it trains, and stopping keeps the model
  trained so far.
* **One run at a time, in line**: the app trains one network at a time for everyone using it. When another run (or
  a curvature survey) is going, yours *waits in line* and starts by itself when the runs ahead of it have ended; the
  page shows how many are ahead, and you may look at other pages meanwhile. **Cancel** takes it out of the line
  (nothing is trained or saved). Each session has at most one run going or waiting, and at most
  {QUEUE_CAPACITY} runs can wait at once.
"""

DRAW = ("Draw with the mouse: light strokes on the dark square, like the Fashion-MNIST pictures (an object in the "
        "middle, filling most of the square). Each stroke, when the mouse button is released, goes through the "
        "same preprocessing as an uploaded picture and is certified below.")

LOCAL = ("**Local** certificate (paper §7.4, App. C.6): the global certificate uses curvature bounds that hold "
         "for *every* input; the local one uses bounds that hold only in a ball around this image (where the "
         "neurons' pre-activations stay in narrow ranges), so they are tighter and the proven radius can only grow. "
         "Both radii are proven lower bounds on the distance to the decision boundary.")
LOCAL_NO_GAIN = ("**No gain here** (the two agree to 4 decimals): the curvature bounds that hold in this image's "
                 "ball are not enough smaller than the global ones to move the radius. The local bound helps when the "
                 "hidden units stay in narrow, flat ranges across the ball; a difference below 0.00005 is shown as "
                 "no gain rather than as ±0.0000.")
RELU_NO_HESSIAN = """
**This page does not apply to ReLU networks.** ReLU is piecewise linear, so the margin's Hessian is **zero almost
everywhere** (inside each linear region) and **undefined at the kinks** where a hidden unit switches on or off: there
is no spectrum to show here and no global bound m ≤ λ ≤ M to compare it with. Second-order certificates do not
apply; a 2-layer ReLU net is certified another way (the paper's App. G: quadratic bounds on each ReLU, on the
**Certify** page). Pick a softplus, sigmoid or tanh model to see its curvature.
"""

RELU_NO_CURVATURE = """
**This page does not apply to ReLU networks.** ReLU is piecewise linear: the margin's Hessian is **zero almost
everywhere** and **undefined at the kinks** (its second derivative is infinite at 0), so there is **no curvature
bound** K_ub to compute and the measured curvature K_lb is 0 wherever it exists. Second-order certificates do not
apply; a 2-layer ReLU net is certified another way (the paper's App. G, on the **Certify** page). Pick a softplus,
sigmoid or tanh model to compare its curvature bounds with the measured curvature.
"""
