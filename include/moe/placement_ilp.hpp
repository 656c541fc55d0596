/// @file placement_ilp.hpp
/// The exact affinity placement of small cases as an integer program, solved by GLPK
/// (Debian `libglpk-dev`; link `-lglpk`, or CMake's `moe::glpk`). Not in moe.hpp: the core
/// never needs GLPK.
///
///     max  sum_{l,a,b,d} C_l(a, b) y_{l,a,b,d}
///     s.t. sum_d x_{l,e,d} = 1,  sum_e x_{l,e,d} = E / D,
///          y_{l,a,b,d} <= x_{l,a,d},  y_{l,a,b,d} <= x_{l+1,b,d},  x binary, y in [0, 1]
///
/// with expert 0 of layer 0 fixed on device 0 (devices are interchangeable). Its size grows as
/// L E D binaries and (L - 1) nnz(C) D continuous variables: for the small cases a heuristic
/// is checked against, not for 256 experts.
#pragma once

#include <glpk.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "placement.hpp"

namespace moe {

struct ilp_placement_result {
    layered_placement placement;
    double objective = 0;  ///< co-located transition counts of the optimum
};

/// Throws [moe.placement.transitions], [moe.placement.devices], [moe.placement.ilp] (GLPK
/// failed or found no optimum within `time_limit_ms`).
[[nodiscard]] inline ilp_placement_result ilp_affinity_placement(const std::vector<matrix<double>>& counts, std::size_t L, std::size_t E,
                                                                 std::size_t D, int time_limit_ms = 60000) {
    detail::check_transitions(counts, L, E);
    layered_placement p = contiguous_layers(L, E, D);  // checks D | E
    std::unique_ptr<glp_prob, void (*)(glp_prob*)> lp(glp_create_prob(), glp_delete_prob);
    glp_set_obj_dir(lp.get(), GLP_MAX);
    auto xcol = [&](std::size_t l, std::size_t e, std::size_t d) { return static_cast<int>((l * E + e) * D + d + 1); };
    const int nx = static_cast<int>(L * E * D);
    glp_add_cols(lp.get(), nx);
    for (int j = 1; j <= nx; ++j) glp_set_col_kind(lp.get(), j, GLP_BV);
    glp_set_col_bnds(lp.get(), xcol(0, 0, 0), GLP_FX, 1.0, 1.0);
    std::vector<int> ia{0}, ja{0};
    std::vector<double> ar{0.0};
    auto entry = [&](int row, int col, double v) {
        ia.push_back(row);
        ja.push_back(col);
        ar.push_back(v);
    };
    // Assignment rows.
    for (std::size_t l = 0; l < L; ++l) {
        for (std::size_t e = 0; e < E; ++e) {
            const int r = glp_add_rows(lp.get(), 1);
            glp_set_row_bnds(lp.get(), r, GLP_FX, 1.0, 1.0);
            for (std::size_t d = 0; d < D; ++d) entry(r, xcol(l, e, d), 1.0);
        }
        for (std::size_t d = 0; d < D; ++d) {
            const int r = glp_add_rows(lp.get(), 1);
            glp_set_row_bnds(lp.get(), r, GLP_FX, static_cast<double>(E / D), static_cast<double>(E / D));
            for (std::size_t e = 0; e < E; ++e) entry(r, xcol(l, e, d), 1.0);
        }
    }
    // Co-location variables for the transitions that occur.
    for (std::size_t l = 0; l + 1 < L; ++l)
        for (std::size_t a = 0; a < E; ++a)
            for (std::size_t b = 0; b < E; ++b) {
                const double c = counts[l](a, b);
                if (c <= 0) continue;
                for (std::size_t d = 0; d < D; ++d) {
                    const int y = glp_add_cols(lp.get(), 1);
                    glp_set_col_bnds(lp.get(), y, GLP_DB, 0.0, 1.0);
                    glp_set_obj_coef(lp.get(), y, c);
                    for (int which = 0; which < 2; ++which) {
                        const int r = glp_add_rows(lp.get(), 1);
                        glp_set_row_bnds(lp.get(), r, GLP_UP, 0.0, 0.0);
                        entry(r, y, 1.0);
                        entry(r, which == 0 ? xcol(l, a, d) : xcol(l + 1, b, d), -1.0);
                    }
                }
            }
    glp_load_matrix(lp.get(), static_cast<int>(ia.size()) - 1, ia.data(), ja.data(), ar.data());
    glp_term_out(GLP_OFF);
    glp_iocp parm;
    glp_init_iocp(&parm);
    parm.presolve = GLP_ON;
    parm.msg_lev = GLP_MSG_OFF;
    parm.tm_lim = time_limit_ms;
    const int rc = glp_intopt(lp.get(), &parm);
    glp_term_out(GLP_ON);
    if (rc != 0 || glp_mip_status(lp.get()) != GLP_OPT)
        MOE_THROW("moe.placement.ilp", "GLPK found no optimal placement (glp_intopt returned ", rc, ", status ", glp_mip_status(lp.get()),
                  "); the case may be too large for the exact method");
    ilp_placement_result out;
    for (std::size_t l = 0; l < L; ++l)
        for (std::size_t e = 0; e < E; ++e)
            for (std::size_t d = 0; d < D; ++d)
                if (glp_mip_col_val(lp.get(), xcol(l, e, d)) > 0.5) p.device[l * E + e] = static_cast<std::int32_t>(d);
    out.placement = std::move(p);
    out.objective = colocated_transitions(counts, out.placement);
    return out;
}

}  // namespace moe
