"""Drop-in modules (SPEC §1.5): nn.LSTM / nn.RNN-shaped multi-layer modules and nn.LSTMCell /
nn.RNNCell-shaped single-step cells for every family of SPEC §1.2-1.3, and the orthogonal (DTRIV) and IndRNN
cores with the same input dynamics (tritonrnn.nn.cores; modules only, no Cells). The momentum-state API (how v, m, a
are passed in and out for truncated BPTT) is described in tritonrnn.nn.modules and tritonrnn.nn.cells."""
from .cells import (AdamLSTMCell, AdamRNNCell, LSTMCell, MomentumLSTMCell, MomentumRNNCell, NesterovLSTMCell,
                    RMSPropLSTMCell, RMSPropRNNCell, RNNCell, SRLSTMCell, SRRNNCell)
from .checkpoint import checkpoint_sequence
from .cores import (AdamIndRNN, AdamOrthogonalRNN, IndRNN, MomentumIndRNN, MomentumOrthogonalRNN, OrthogonalRNN,
                    RMSPropIndRNN, RMSPropOrthogonalRNN, SRIndRNN, SROrthogonalRNN)
from .modules import (LSTM, RNN, AdamLSTM, AdamRNN, MomentumLSTM, MomentumRNN, NesterovLSTM, RMSPropLSTM,
                      RMSPropRNN, SRLSTM, SRRNN)

__all__ = ["LSTM", "MomentumLSTM", "SRLSTM", "AdamLSTM", "RMSPropLSTM", "NesterovLSTM",
           "RNN", "MomentumRNN", "SRRNN", "AdamRNN", "RMSPropRNN",
           "OrthogonalRNN", "MomentumOrthogonalRNN", "SROrthogonalRNN", "AdamOrthogonalRNN", "RMSPropOrthogonalRNN",
           "IndRNN", "MomentumIndRNN", "SRIndRNN", "AdamIndRNN", "RMSPropIndRNN",
           "checkpoint_sequence",
           "LSTMCell", "MomentumLSTMCell", "SRLSTMCell", "AdamLSTMCell", "RMSPropLSTMCell", "NesterovLSTMCell",
           "RNNCell", "MomentumRNNCell", "SRRNNCell", "AdamRNNCell", "RMSPropRNNCell"]
