"""Optimizers that follow the reference code's update rules where Keras's built-ins differ.

RMSprop's epsilon. Keras divides the gradient by ``sqrt(v + epsilon)``; the Torch code behind
the Stacked Hourglass (``optim.rmsprop``) and the PyTorch code behind the poster
(``torch.optim.RMSprop``) divide by ``sqrt(v) + epsilon``. With epsilon = 1e-8 the Keras
denominator never falls below ``sqrt(1e-8) = 1e-4``, while the reference one falls to 1e-8: a
parameter whose gradients stay around 1e-5 (common under a mean-reduced heatmap MSE) takes steps
about 10x smaller in Keras than in the reference, and smaller gradients fare worse.
:class:`RMSprop` uses the reference rule when ``epsilon_outside_sqrt`` is true (the default):

    v   <- rho * v + (1 - rho) * g^2                 (v starts at 0, as in both references)
    d   <- sqrt(v) + epsilon                         centered: sqrt(v - a^2) + epsilon,
                                                     with a <- rho * a + (1 - rho) * g
    without momentum:  x <- x - lr * g / d           (Torch7 optim.rmsprop, PyTorch)
    with momentum:     b <- momentum * b + g / d;  x <- x - lr * b          (PyTorch)

Keras keeps the learning rate inside its momentum buffer (``b <- momentum * b + lr * g / d;
x <- x - b``); the two agree while the rate is constant and differ after a schedule's step,
where PyTorch's form applies the new rate to the whole buffer at once. A buffer written by one
form therefore does not continue the other: keep the option fixed for the life of a run.
With ``epsilon_outside_sqrt=False`` the class is Keras's RMSprop unchanged.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_pose")
class RMSprop(keras.optimizers.RMSprop):
    """RMSprop whose epsilon can sit outside the square root, as in Torch7 and PyTorch.

    Takes the arguments of ``keras.optimizers.RMSprop`` (``rho`` is Torch's ``alpha``) plus
    ``epsilon_outside_sqrt``, and keeps the same slot variables (``velocity``, ``momentum``,
    ``average_gradient``). ``get_config`` records the option, so ``.keras`` files and
    ``BackupAndRestore`` checkpoints come back with the rule they were trained with. Weight decay
    stays Keras's decoupled form (applied by the base class).
    """

    def __init__(self, *args, epsilon_outside_sqrt: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.epsilon_outside_sqrt = bool(epsilon_outside_sqrt)

    def update_step(self, gradient, variable, learning_rate):
        if not self.epsilon_outside_sqrt:
            return super().update_step(gradient, variable, learning_rate)
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        velocity = self._velocities[index]
        rho = self.rho

        self.assign(velocity, ops.add(ops.multiply(rho, velocity),
                                      ops.multiply(1 - rho, ops.square(gradient))))
        if self.centered:
            average_grad = self._average_gradients[index]
            self.assign(average_grad, ops.add(ops.multiply(rho, average_grad),
                                              ops.multiply(1 - rho, gradient)))
            mean_square = ops.subtract(velocity, ops.square(average_grad))
        else:
            mean_square = velocity
        denominator = ops.add(ops.sqrt(mean_square), self.epsilon)
        direction = ops.divide(gradient, denominator)
        if self.momentum > 0:
            buffer = self._momentums[index]
            self.assign(buffer, ops.add(ops.multiply(self.momentum, buffer), direction))
            self.assign_sub(variable, ops.multiply(lr, buffer))
        else:
            self.assign_sub(variable, ops.multiply(lr, direction))

    def get_config(self):
        config = super().get_config()
        config["epsilon_outside_sqrt"] = self.epsilon_outside_sqrt
        return config
